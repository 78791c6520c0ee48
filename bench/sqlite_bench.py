"""Benchmark the embedded SQLite backend: enqueue rate and end-to-end processed rate.

Compares, in the same run, with a plain sqlite3 queue loop (a leased UPDATE ... RETURNING in
batches plus a batched DELETE: the least a reliable SQLite queue must do) and prints ratios.

    .venv/bin/python bench/sqlite_bench.py [--jobs 10000]

Speed figures live here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from noop_app import app, noop  # noqa: E402


def enqueue(db: Path, jobs: int, batch: int) -> float:
    app.use(f"sqlite:///{db}")
    t0 = time.perf_counter()
    for start in range(0, jobs, batch):
        noop.enqueue_many([(i,) for i in range(start, min(start + batch, jobs))])
    elapsed = time.perf_counter() - t0
    app.close()
    return jobs / elapsed


def drain(
    db: Path, jobs: int, workers: int, concurrency: int, prefetch: int
) -> tuple[float, float]:
    """Run `workers` worker processes in burst mode; returns (wall rate, steady rate)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
    cmd = [
        sys.executable,
        "-m",
        "jobkit.cli.main",
        "--app",
        "noop_app:app",
        "--backend",
        f"sqlite:///{db}",
        "worker",
        "-q",
        "bench",
        "--burst",
        "-c",
        str(concurrency),
        "--prefetch",
        str(prefetch),
        "--poll",
        "0.2",
    ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(cmd, env=env, cwd=ROOT, stderr=subprocess.DEVNULL) for _ in range(workers)
    ]
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - t0
    conn = sqlite3.connect(db)
    first, last, done = conn.execute(
        "SELECT MIN(updated_at), MAX(updated_at), COUNT(*) FROM jobkit_jobs "
        "WHERE state = 'succeeded'"
    ).fetchone()
    conn.close()
    if done != jobs:
        raise SystemExit(f"only {done} of {jobs} jobs succeeded")
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    return jobs / wall, (jobs - 1) / span if span > 0 else float("inf")


def raw_baseline(db: Path, jobs: int, batch: int = 50) -> tuple[float, float]:
    """A plain sqlite3 reliable queue: batch insert; lease by UPDATE ... RETURNING; DELETE."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE q (seq INTEGER PRIMARY KEY, body BLOB, state TEXT, due REAL, token TEXT)"
    )
    conn.execute("CREATE INDEX q_ready ON q (state, seq)")
    body = b'{"v":1,"job":"noop","args":[1]}'
    t0 = time.perf_counter()
    for start in range(0, jobs, 500):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO q (body, state, due) VALUES (?, 'ready', 0)",
            [(body,)] * min(500, jobs - start),
        )
        conn.execute("COMMIT")
    enq = jobs / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    done = 0
    while done < jobs:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "UPDATE q SET state='leased', token='t', due=? WHERE seq IN "
            "(SELECT seq FROM q WHERE state='ready' ORDER BY seq LIMIT ?) RETURNING seq, body",
            (time.time() + 30, batch),
        ).fetchall()
        conn.execute("COMMIT")
        for _seq, payload in rows:
            payload.decode()  # the "job"
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM q WHERE seq=? AND token='t'", [(s,) for s, _ in rows])
        conn.execute("COMMIT")
        done += len(rows)
    return enq, jobs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--prefetch", type=int, default=16)
    args = parser.parse_args()
    table = Table(title=f"SQLite backend, {args.jobs:,} no-op jobs, {os.cpu_count()} CPUs")
    for col in (
        "setup",
        "enqueue jobs/s",
        "drain jobs/s (wall)",
        "drain jobs/s (steady)",
        "x raw sqlite3",
    ):
        table.add_column(col, justify="left" if col == "setup" else "right")
    with tempfile.TemporaryDirectory() as tmp:
        raw_enq, raw_drain = raw_baseline(Path(tmp) / "raw.db", args.jobs)
        table.add_row(
            "raw sqlite3 loop (1 process, batches of 50)",
            f"{raw_enq:,.0f}",
            f"{raw_drain:,.0f}",
            "-",
            "1.00",
        )
        setups = [(1, 1), (1, 2), (2, 1)]  # (worker processes, job processes each)
        for workers, concurrency in setups:
            db = Path(tmp) / f"jobs-{workers}-{concurrency}.db"
            enq = enqueue(db, args.jobs, batch=500)
            wall, steady = drain(db, args.jobs, workers, concurrency, args.prefetch)
            table.add_row(
                f"jobkit: {workers} worker x {concurrency} job process(es), "
                f"prefetch {args.prefetch}",
                f"{enq:,.0f}",
                f"{wall:,.0f}",
                f"{steady:,.0f}",
                f"{steady / raw_drain:.2f}",
            )
    Console(width=150).print(table)
    print(
        "enqueue: enqueue_many in batches of 500; wall: worker start to last job;"
        " steady: first to last job end. Ratio: steady drain vs the raw loop's drain."
    )


if __name__ == "__main__":
    main()
