"""A mixed set of jobs (ready, delayed, retried, dead) to migrate, and a by-id snapshot of where
every job is, to compare before and after a migration."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobkit.spi import Backend, Envelope, TransportBackend
from tests.waiting import wait_until
from tests.workers import ROOT, kill_group, start_worker

QUEUE = "mig"


@dataclass(frozen=True, kw_only=True)
class Seeded:
    """What was put at the source, by kind: job ids, and the delay asked for delayed ones."""

    ready: tuple[str, ...]
    delayed: dict[str, timedelta]
    retried: dict[str, int]  # id -> attempts used
    dead: dict[str, str]  # id -> reason
    seeded_at: datetime

    @property
    def live(self) -> set[str]:
        return {*self.ready, *self.delayed, *self.retried}

    @property
    def every(self) -> set[str]:
        return self.live | set(self.dead)


def seed(
    backend: TransportBackend,
    *,
    ready: int,
    delayed: int,
    retried: int,
    dead: int,
    priorities: bool = True,
) -> Seeded:
    """Jobs with headers, an idempotency key, a priority (with `priorities`, where the backend
    has them) and a time limit; `retried` ones have failed once and wait out a 10-minute
    backoff."""
    priorities = priorities and backend.capabilities.priorities > 1

    def envelope(kind: str, n: int, delay: timedelta | None = None) -> Envelope:
        return Envelope(
            job="record",
            args=(kind, n),
            kwargs={"n": n, "nested": {"k": [1, "two"]}},
            queue=QUEUE,
            headers={"trace": f"{kind}-{n}"},
            idempotency_key=f"key-{kind}-{n}" if n % 2 else None,
            priority=(n % 5) if priorities else 0,
            time_limit=30.0,
            not_before=datetime.now(UTC) + delay if delay else None,
        )

    def send(envelopes: Sequence[Envelope]) -> list[str]:
        backend.send([(env, env.encode()) for env in envelopes])
        return [env.id for env in envelopes]

    retried_ids = send([envelope("retried", n) for n in range(retried)])
    dead_ids = set(send([envelope("dead", n) for n in range(dead)]))
    transport = backend.transport
    pending = set(retried_ids) | dead_ids
    while pending:  # the queue holds only these now
        for delivery in transport.receive(
            [QUEUE], max_messages=100, wait=timedelta(seconds=1), lease=timedelta(minutes=5)
        ):
            if delivery.id in dead_ids:
                transport.dead_letter(delivery, reason=f"boom {delivery.id}")
            else:
                transport.release(delivery, delay=timedelta(minutes=10))
            pending.discard(delivery.id)
    ready_ids = send([envelope("ready", n) for n in range(ready)])
    delays = {n: timedelta(minutes=10 + n % 50) for n in range(delayed)}
    delayed_ids = send([envelope("delayed", n, delays[n]) for n in range(delayed)])
    return Seeded(
        ready=tuple(ready_ids),
        delayed={i: delays[n] for n, i in enumerate(delayed_ids)},
        retried=dict.fromkeys(retried_ids, 1),
        dead={i: f"boom {i}" for i in dead_ids},
        seeded_at=datetime.now(UTC),
    )


@dataclass(frozen=True, kw_only=True)
class Found:
    """One job as found at a backend: its envelope fields, attempts used, due time, dead reason."""

    body: dict[str, object]
    attempts: int
    due_in: timedelta
    reason: str | None


def snapshot_sqlite(path: str, queue: str = QUEUE) -> dict[str, list[Found]]:
    """Every row of `queue` in a jobkit SQLite file, by job id (a list, to see duplicates)."""
    now = datetime.now(UTC).timestamp()
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT id, body, deliveries, state, due, reason FROM jobkit_messages WHERE queue = ?",
            (queue,),
        ).fetchall()
    finally:
        db.close()
    found: dict[str, list[Found]] = {}
    for job_id, body, deliveries, state, due, reason in rows:
        data = json.loads(body)
        found.setdefault(job_id, []).append(
            Found(
                body={k: v for k, v in data.items() if k != "attempt"},
                attempts=data["attempt"] + deliveries,
                due_in=timedelta(seconds=max(due - now, 0.0))
                if state == "delayed"
                else timedelta(0),
                reason=reason if state == "dead" else None,
            )
        )
    return found


def check_migrated(found: dict[str, list[Found]], seeded: Seeded, *, slack: timedelta) -> None:
    """Every seeded job exactly once with its state; delays within `slack` of what is left."""
    assert set(found) == seeded.every, (
        f"missing {sorted(seeded.every - set(found))[:5]}, "
        f"extra {sorted(set(found) - seeded.every)[:5]}"
    )
    duplicated = {i: len(rows) for i, rows in found.items() if len(rows) != 1}
    assert not duplicated, f"jobs present more than once: {duplicated}"
    elapsed = datetime.now(UTC) - seeded.seeded_at
    for job_id, (job,) in found.items():
        assert job.body["id"] == job_id and job.body["job"] == "record"
        assert job.body["headers"] == {"trace": f"{job.body['args'][0]}-{job.body['args'][1]}"}  # type: ignore[index]
        assert job.body["time_limit"] == 30.0
        if job_id in seeded.dead:
            assert job.reason == seeded.dead[job_id]
            assert job.attempts == 1
        elif job_id in seeded.delayed:
            left = seeded.delayed[job_id] - elapsed
            assert abs(job.due_in - left) <= slack, (job_id, job.due_in, left)
            assert job.attempts == 0 and job.reason is None
        elif job_id in seeded.retried:
            assert job.attempts == 1 and job.reason is None
            assert timedelta(minutes=10) - elapsed - slack <= job.due_in <= timedelta(minutes=10)
        else:
            assert job.attempts == 0 and job.due_in == timedelta(0) and job.reason is None


def rows(path: Path) -> int:
    """Rows in a jobkit SQLite file (0 before its schema exists)."""
    try:
        return sum(len(v) for v in snapshot_sqlite(str(path)).values())
    except sqlite3.OperationalError:
        return 0


def migrate_killed_then_whole(
    source: str, target: str, tmp_path: Path, watch: Callable[[], bool], *extra: str
) -> dict[str, Any]:
    """`jobkit migrate --queue QUEUE ... extra` as a subprocess, SIGKILLed once `watch()` holds
    (or it ended), then run again to the end (exit 0 asserted); the last run's JSON report.
    (The queue is named: the report lists it even if the first run moved every job.)"""
    argv = [sys.executable, "-m", "jobkit.cli.main", "migrate", "--from", source, "--to", target,
            "--queue", QUEUE, "--batch", "10", "--lease", "1", "--wait", "20", *extra]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: watch() or proc.poll() is not None, timeout=60, interval=0.005)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report = tmp_path / f"report-{os.getpid()}-{len(list(tmp_path.iterdir()))}.json"
    done = subprocess.run([*argv, "--json", str(report)], cwd=ROOT, env=env,
                          capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def backend_of(url: str) -> Backend:
    from jobkit.spi import open_backend

    return open_backend(url)


WORK = "work"  # the queue of tests.apps.ledger's jobs, served by the source worker


@contextmanager
def job_running_at_source(url: str, tmp_path: Path, *, seconds: float) -> Iterator[Path]:
    """A real worker on `url` (queue `WORK` only) running one `record` job that sleeps
    `seconds`; yields the ledger once the job has started. The worker is SIGKILLed at the end."""
    ledger = tmp_path / "ledger.db"
    backend = backend_of(url)
    try:
        slow = Envelope(job="tests.apps.ledger.record", args=("slow", seconds), queue=WORK)
        backend.send([(slow, slow.encode())])
    finally:
        backend.close()
    worker = start_worker(url, ledger, "-q", WORK, "-c", "1", "--lease", "60")
    try:
        wait_until(
            lambda: _ledger_count(ledger, "SELECT COUNT(*) FROM runs") == 1,
            timeout=60,
            interval=0.1,
            what="the slow job started at the source",
        )
        yield ledger
    finally:
        kill_group(worker)
        worker.wait(timeout=30)


def slow_job_done(ledger: Path) -> bool:
    return _ledger_count(ledger, "SELECT COUNT(*) FROM effects WHERE key = 'slow'") == 1


def _ledger_count(ledger: Path, sql: str) -> int:
    from tests.apps.ledger import count

    try:
        return count(ledger, sql) if ledger.exists() else 0
    except sqlite3.OperationalError:  # the job has not created its tables yet
        return 0
