"""The migration scenario: a mixed set of jobs (ready, delayed, with attempts used, dead) is
migrated from the backend under test to a second backend (an SQLite file) and back with
`jobkit migrate`, the migrator SIGKILLed in the middle of the first trip and run again; then
there and back once more (each job comes back to a backend it left before, which must not take
it for a copy it already has); then every job is looked up by id at the backend under test.

The jobs are put on the broker directly (not through `Context.enqueue`: no worker runs them, so
the delivery checks do not count them) and taken off again at the end. What was seeded and what
came back are recorded in one `F.MIGRATE` operation, judged by `checkers.migration_exact`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobkit.spi import (
    Backend,
    Envelope,
    ExportedJob,
    Migration,
    TransportBackend,
    decode,
    migrate,
    open_backend,
)
from jobkit_conformance.history import F, OpType

from .context import Context
from .settings import NotApplicable

_BATCH = 3
_EXPORT_LEASE = timedelta(seconds=30)
_DELAY = timedelta(minutes=10)


def migration(ctx: Context) -> None:
    caps = ctx.suite.backend.capabilities
    support = caps.migration
    if support is None or not support.exports:
        raise NotApplicable(f"{caps.name} cannot export jobs (Capabilities.migration)")
    second = f"sqlite:///{ctx.suite.workdir / 'migration-second.db'}"
    with _backend(ctx) as backend:
        expected = _seed(ctx, backend)
        seeded_at = time.time()
        reports: list[dict[str, Any]] = []
        for trip in range(2):  # the second trip: jobs come back to where they were before
            if ctx.suite.in_process:  # a subprocess cannot see this backend: no kill
                dead = support.dead_letters
                reports.append(_in_process(backend, second, ctx.queue, dead))
                reports.append(_in_process(backend, second, ctx.queue, dead, back=True))
            else:
                there = [ctx.suite.url, second]
                reports.append(_cli(ctx, *there, dead=support.dead_letters, kill=trip == 0))
                reports.append(_cli(ctx, *reversed(there), dead=support.dead_letters, kill=False))
        found = _take_all(backend, ctx.queue)
    ctx.record(
        "migrator",
        OpType.OK,
        F.MIGRATE,
        value={
            "expected": expected,
            "found": found,
            "seeded_at": seeded_at,
            "looked_at": time.time(),
            "reports": reports,
            "batch": _BATCH,
            "killed_export_counts": support.killed_export_counts,
        },
    )


@contextmanager
def _backend(ctx: Context) -> Iterator[Backend]:
    if ctx.suite.in_process:
        with ctx.suite.lock:
            yield ctx.suite.backend
        return
    backend = open_backend(ctx.suite.url)
    try:
        yield backend
    finally:
        backend.close()


def _seed(ctx: Context, backend: Backend) -> dict[str, dict[str, Any]]:
    """Ready jobs (some with attempts used), delayed ones where the backend exports them before
    they are due, and dead letters where it migrates them; returns each job's expected state."""
    caps = backend.capabilities
    support = caps.migration
    assert support is not None
    dead = _seed_dead(ctx, backend)
    priority = caps.priorities > 1
    keyed = caps.idempotency_keys  # else keys are refused (at enqueue and at import)
    envelopes: list[tuple[Envelope, float | None]] = []
    for n in range(12):
        envelopes.append(
            (
                Envelope(
                    job="effect",
                    args=(f"migrated-{n}",),
                    kwargs={"n": n},
                    queue=ctx.queue,
                    attempt=2 if n % 3 == 0 else 0,
                    priority=n % 4 if priority else 0,
                    idempotency_key=f"{ctx.queue}-{n}" if keyed and n % 2 else None,
                    headers={"h": str(n)},
                    time_limit=20.0,
                ),
                None,
            )
        )
    if support.delayed_before_due:
        for n in range(4):
            due = datetime.now(UTC) + _DELAY + timedelta(minutes=n)
            env = Envelope(job="effect", args=(f"later-{n}",), queue=ctx.queue, attempt=1,
                           not_before=due)  # fmt: skip
            envelopes.append((env, due.timestamp()))
    backend.send([(env, env.encode()) for env, _ in envelopes])
    expected = {
        env.id: {"body": _fields(env.encode()), "attempts": env.attempt, "due": due, "dead": None}
        for env, due in envelopes
    }
    return expected | dead


def _seed_dead(ctx: Context, backend: Backend) -> dict[str, dict[str, Any]]:
    """One dead letter (one attempt used), made on the still empty queue before anything else
    is sent to it, where the backend migrates dead letters and jobkit drives its worker."""
    support = backend.capabilities.migration
    if support is None or not support.dead_letters or not isinstance(backend, TransportBackend):
        return {}
    dead = Envelope(job="effect", args=("dead",), queue=ctx.queue)
    backend.send([(dead, dead.encode())])
    (delivery,) = backend.transport.receive(
        [ctx.queue], max_messages=1, wait=timedelta(seconds=10), lease=_EXPORT_LEASE
    )
    backend.transport.dead_letter(delivery, reason="seeded dead letter")
    body = _fields(dead.encode())
    return {dead.id: {"body": body, "attempts": 1, "due": None, "dead": "seeded dead letter"}}


def _fields(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(body)
    data.pop("attempt", None)
    return data


def _rows(path: Path) -> int:
    try:
        db = sqlite3.connect(path)
        try:
            return int(db.execute("SELECT COUNT(*) FROM jobkit_messages").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def _cli(ctx: Context, source: str, target: str, *, dead: bool, kill: bool) -> dict[str, Any]:
    """`jobkit migrate` as a subprocess; with `kill`, SIGKILLed once the target holds a job,
    then run again to the end. Returns the last run's JSON report."""
    report = ctx.suite.workdir / f"migration-{int(time.time() * 1000)}.json"
    argv = [
        sys.executable,
        "-m",
        "jobkit.cli.main",
        "migrate",
        "--from",
        source,
        "--to",
        target,
        "--queue",
        ctx.queue,
        "--batch",
        str(_BATCH),
        "--lease",
        "2",
        "--wait",
        "10",
    ]
    argv += ["--include-dead"] if dead else []  # fmt: skip
    second = Path(target.removeprefix("sqlite:///")) if target.startswith("sqlite:") else None
    if kill and second is not None:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while proc.poll() is None and _rows(second) == 0 and time.monotonic() < deadline:
            time.sleep(0.002)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        ctx.record("nemesis", OpType.OK, F.KILL, value={"migrator": True, "killed": killed})
    done = subprocess.run([*argv, "--json", str(report)], capture_output=True, timeout=300)
    if not report.exists():
        raise RuntimeError(f"jobkit migrate wrote no report: {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    result["exit_code"] = done.returncode
    return result


def _in_process(
    backend: Backend, second: str, queue: str, dead: bool, *, back: bool = False
) -> dict[str, Any]:
    """Migrate `queue` from `backend` to the `second` URL (with `back`, the other way)."""
    other = open_backend(second)
    try:
        return _run(other, backend, queue, dead) if back else _run(backend, other, queue, dead)
    finally:
        other.close()


def _run(source: Backend, target: Backend, queue: str, dead: bool) -> dict[str, Any]:
    options = Migration(queues=(queue,), include_dead=dead, batch=_BATCH, wait=timedelta(0))
    report = migrate(source, target, options, source_name="source", target_name="target")
    result = report.to_dict()
    result["exit_code"] = 0 if report.ok else 1
    return result


def _take_all(backend: Backend, queue: str) -> dict[str, list[dict[str, Any]]]:
    """Every job of `queue` by id, with its state, through the export primitives; then deleted
    (the queue is left empty)."""
    held: list[ExportedJob] = []
    found: dict[str, list[dict[str, Any]]] = {}
    while True:
        batch = backend.export_jobs([queue], limit=100, lease=_EXPORT_LEASE, include_dead=True)
        # a job's remaining delay is as of its export call, which may take seconds (SQS and
        # DynamoDB on a loaded machine): its due time counts from that call's end, not the loop's
        # start (2.4 s early on the CI's machine)
        now = time.time()
        if not batch:
            break
        held += batch
        for job in batch:
            try:
                attempts = decode(job.body).attempt
            except Exception:
                attempts = -1
            found.setdefault(job.id, []).append(
                {
                    "body": _fields(job.body),
                    "attempts": attempts,
                    "due": now + job.delay.total_seconds() if job.delay else None,
                    "dead": job.dead_reason,
                }
            )
    backend.commit_export(held)
    return found
