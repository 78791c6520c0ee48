"""Benchmark the embedded SQLite backend beside a plain sqlite3 queue loop.

jobkit: ``noop.enqueue`` one call per job, ``noop.enqueue_many`` in batches of 500, and one
``jobkit worker`` process (``-c 1 --prefetch 16``, burst) draining the queue; latency with a
running worker (``-c 1``, default polling). The drain rate is steady-state: (N-1) / (first to
last job end, from the job records), so worker start-up is excluded.

Native: the least a reliable SQLite queue must do, in one process on a WAL database: one INSERT
per job (a transaction each), or batches of 500 in one transaction; the drain leases by
``UPDATE ... RETURNING`` in batches of 50, decodes each body, then deletes the batch; latency
with a consumer thread polling every 5 ms on its own connection.

    .venv/bin/python bench/sqlite_bench.py [--quick]

``measure(quick=...)`` is what ``bench/run.py`` calls. Speed figures live here, never in tests.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _local import BATCH, STAMPS_ENV, alternating, enqueue_rates, warm_latency_ms  # noqa: E402
from _rows import Measurement  # noqa: E402
from noop_app import app, stamp  # noqa: E402

PREFETCH = 16
BACKEND = "sqlite"


def measure(*, quick: bool) -> list[Measurement]:
    """jobkit and the raw sqlite3 loop, alternating, median of 3 rounds (1 if `quick`)."""
    jobs, latency_jobs, rounds = (300, 20, 1) if quick else (10_000, 200, 3)
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-sqlite-") as tmp:
        work = Path(tmp)
        return alternating(
            rounds,
            lambda r: jobkit_round(work / f"jobkit-{r}", jobs, latency_jobs),
            lambda r: raw_round(work / f"raw-{r}", jobs, latency_jobs),
        )


# -- jobkit ------------------------------------------------------------------------------------


def jobkit_round(work: Path, jobs: int, latency_jobs: int) -> Measurement:
    work.mkdir()
    dbs = iter([work / "one.db", work / "many.db"])
    enqueue, enqueue_many, _ = enqueue_rates(jobs, lambda: app.use(f"sqlite:///{next(dbs)}"))
    app.close()
    drain = jobkit_drain(work / "many.db", jobs + 1)

    p50, p99 = jobkit_latency(work, latency_jobs)
    return Measurement(
        backend=BACKEND,
        system="jobkit",
        jobs=jobs,
        enqueue_per_s=enqueue,
        enqueue_many_per_s=enqueue_many,
        drain_per_s=drain,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        notes=f"1 worker, -c 1, prefetch {PREFETCH}; enqueue_many in batches of {BATCH}",
    )


def worker_command(db: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "jobkit.cli.main", "--app", "noop_app:app",
        "--backend", f"sqlite:///{db}", "worker", "-q", "bench", "-c", "1", *extra,
    ]  # fmt: skip


def worker_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), **extra)


def jobkit_drain(db: Path, jobs: int) -> float:
    """Steady drain rate of one burst worker over the `jobs` waiting in `db`."""
    cmd = worker_command(db, "--burst", "--prefetch", str(PREFETCH), "--poll", "0.2")
    done = subprocess.run(cmd, env=worker_env(), cwd=ROOT, capture_output=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"the worker failed: {done.stderr.decode(errors='replace')[-2000:]}")
    conn = sqlite3.connect(db)
    first, last, finished = conn.execute(
        "SELECT MIN(updated_at), MAX(updated_at), COUNT(*) FROM jobkit_jobs "
        "WHERE state = 'succeeded'"
    ).fetchone()
    conn.close()
    if finished != jobs:
        raise RuntimeError(f"only {finished} of {jobs} jobs succeeded")
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return (jobs - 1) / span if span > 0 else float("inf")


def jobkit_latency(work: Path, count: int) -> tuple[float, float]:
    db, stamps = work / "latency.db", work / "stamps.txt"
    app.use(f"sqlite:///{db}")
    stamp.enqueue(time.time())  # creates the schema; also the warm-up job
    worker = subprocess.Popen(
        worker_command(db),
        env=worker_env(**{STAMPS_ENV: str(stamps)}),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        return warm_latency_ms(stamps, lambda sent: stamp.enqueue(sent), count)
    finally:
        app.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


# -- the raw sqlite3 loop ----------------------------------------------------------------------


def raw_connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS q "
        "(seq INTEGER PRIMARY KEY, body BLOB, state TEXT, due REAL, token TEXT)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS q_ready ON q (state, seq)")
    return conn


def body(arg: float) -> bytes:
    return json.dumps({"v": 1, "job": "noop", "args": [arg]}).encode()


def raw_take(conn: sqlite3.Connection, batch: int) -> list[tuple[int, bytes]]:
    """Lease up to `batch` ready rows, run them (decode the body), delete them."""
    conn.execute("BEGIN IMMEDIATE")
    rows = conn.execute(
        "UPDATE q SET state='leased', token='t', due=? WHERE seq IN "
        "(SELECT seq FROM q WHERE state='ready' ORDER BY seq LIMIT ?) RETURNING seq, body",
        (time.time() + 30, batch),
    ).fetchall()
    conn.execute("COMMIT")
    if rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM q WHERE seq=? AND token='t'", [(s,) for s, _ in rows])
        conn.execute("COMMIT")
    return rows


def raw_round(work: Path, jobs: int, latency_jobs: int) -> Measurement:
    work.mkdir()
    conn = raw_connect(work / "one.db")
    t0 = time.perf_counter()
    for i in range(jobs):
        conn.execute("INSERT INTO q (body, state, due) VALUES (?, 'ready', 0)", (body(i),))
    enqueue = jobs / (time.perf_counter() - t0)
    conn.close()

    conn = raw_connect(work / "many.db")
    t0 = time.perf_counter()
    for start in range(0, jobs, BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO q (body, state, due) VALUES (?, 'ready', 0)",
            [(body(i),) for i in range(start, min(start + BATCH, jobs))],
        )
        conn.execute("COMMIT")
    enqueue_many = jobs / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    while done < jobs:
        rows = raw_take(conn, 50)
        for _seq, payload in rows:
            json.loads(payload)  # the "job"
        done += len(rows)
    drain = jobs / (time.perf_counter() - t0)
    conn.close()

    p50, p99 = raw_latency(work, latency_jobs)
    return Measurement(
        backend=BACKEND,
        system="sqlite3",
        jobs=jobs,
        enqueue_per_s=enqueue,
        enqueue_many_per_s=enqueue_many,
        drain_per_s=drain,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        notes="raw loop, 1 process, leases 50 at a time, polls every 5 ms",
    )


def raw_latency(work: Path, count: int) -> tuple[float, float]:
    db, stamps = work / "latency.db", work / "stamps.txt"
    producer = raw_connect(db)
    stop = threading.Event()

    def consume() -> None:
        conn = raw_connect(db)
        with stamps.open("a") as out:
            while not stop.is_set():
                rows = raw_take(conn, 50)
                for _seq, payload in rows:
                    sent = json.loads(payload)["args"][0]
                    out.write(f"{time.time() - sent}\n")
                    out.flush()
                if not rows:
                    time.sleep(0.005)
        conn.close()

    consumer = threading.Thread(target=consume, name="raw-sqlite-consumer")
    consumer.start()

    def send(sent: float) -> None:
        producer.execute("INSERT INTO q (body, state, due) VALUES (?, 'ready', 0)", (body(sent),))

    try:
        send(time.time())
        return warm_latency_ms(stamps, send, count)
    finally:
        stop.set()
        consumer.join(timeout=30)
        producer.close()


if __name__ == "__main__":
    from run import standalone

    standalone(measure, __doc__)
