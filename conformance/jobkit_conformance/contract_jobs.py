"""More conformance jobs, registered on `jobkit_conformance.jobs.app` (which imports this
module): payload echo, reject-once, single-attempt jobs, async jobs and a job only "new code"
defines.

Like the others, each records its executions in the effect ledger. The echo job also records
the fingerprints (`jobkit_conformance.payloads`) of what it received and what it returned.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from typing import Any

from jobkit import Reject, RetryPolicy, current_job
from jobkit_conformance.jobs import FAST, FLAKY, LIMITED, TIME_LIMIT, TransientError, _run, app
from jobkit_conformance.ledger import Ledger
from jobkit_conformance.payloads import fingerprint

ONCE = RetryPolicy(max_attempts=1, backoff_base=timedelta(milliseconds=100), jitter=0.5)

NEW_CODE_ENV = "JOBKIT_CONFORMANCE_NEW_CODE"
"""Set to 1 in a worker's environment to define `conformance.new_code` (a rolling deploy)."""
NEW_CODE_JOB = "conformance.new_code"

_PAYLOADS = (
    "CREATE TABLE IF NOT EXISTS payloads (job_id TEXT NOT NULL, pid INTEGER NOT NULL, "
    "at REAL NOT NULL, received TEXT NOT NULL, returned TEXT NOT NULL)"
)


def record_payload(ledger: Ledger, job_id: str, received: Any, returned: Any) -> None:
    with ledger._db() as db:
        db.execute(_PAYLOADS)
        db.execute(
            "INSERT INTO payloads (job_id, pid, at, received, returned) VALUES (?, ?, ?, ?, ?)",
            (
                job_id,
                os.getpid(),
                time.time(),
                json.dumps(fingerprint(received)),
                json.dumps(fingerprint(returned)),
            ),
        )


def payload_rows(ledger: Ledger, job_ids: set[str]) -> list[tuple[str, int, float, Any, Any]]:
    """(job id, pid, time, received fingerprint, returned fingerprint) per execution."""
    with ledger._db() as db:
        db.execute(_PAYLOADS)
        rows = db.execute(
            "SELECT job_id, pid, at, received, returned FROM payloads ORDER BY at"
        ).fetchall()
    return [
        (str(r[0]), int(r[1]), float(r[2]), json.loads(r[3]), json.loads(r[4]))
        for r in rows
        if r[0] in job_ids
    ]


def echo_result(values: list[Any]) -> dict[str, Any]:
    """What `conformance.echo` returns for the arguments after its token."""
    return {"echo": values, "count": len(values)}


@app.job(name="conformance.echo", retry=FAST)
def echo(token: str, *values: Any) -> dict[str, Any]:
    """Record the fingerprints of the arguments received and of the result, return the result."""
    ledger = Ledger.from_env()
    context = current_job()
    row, _ = ledger.start(token, "conformance.echo", context.attempt if context else None)
    result = echo_result(list(values))
    record_payload(ledger, token, list(values), result)
    ledger.end(row, "ok")
    return result


@app.job(name="conformance.reject_once", retry=FAST)
def reject_once(token: str) -> None:
    """Fail permanently (`Reject`) on the first execution; take effect on any later one (a
    replay)."""
    ledger = Ledger.from_env()
    context = current_job()
    row, attempt = ledger.start(
        token, "conformance.reject_once", context.attempt if context else None
    )
    if attempt == 1:
        ledger.end(row, "fail", "Reject: first execution fails on purpose")
        raise Reject("first execution fails on purpose")
    ledger.effect(token, None)
    ledger.end(row, "ok")


@app.job(name="conformance.once", retry=ONCE)
def once(token: str, seconds: float) -> None:
    """A single-attempt job running `seconds`, then taking effect."""
    _run(token, "conformance.once", "effect", seconds=seconds)


async def _run_async(token: str, job: str, body: str, *, seconds: float = 0.0) -> None:
    """`jobs._run` for coroutines: awaits between beats, so an un-awaited coroutine records
    nothing at all."""
    ledger = Ledger.from_env()
    context = current_job()
    await asyncio.sleep(0)
    row, attempt = ledger.start(token, job, context.attempt if context else None)
    try:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(0.5, left))
            ledger.beat(row)
        if body.startswith("fail<") and attempt <= int(body[5:]):
            raise TransientError(f"attempt {attempt} fails on purpose")
        await asyncio.sleep(0.01)
        ledger.effect(token, None)
    except BaseException as exc:
        ledger.end(row, "fail", f"{type(exc).__name__}: {exc}")
        raise
    ledger.end(row, "ok")


@app.job(name="conformance.async_effect", retry=FAST)
async def async_effect(token: str) -> None:
    """An `async def` job taking effect after awaiting."""
    await _run_async(token, "conformance.async_effect", "effect")


@app.job(name="conformance.async_flaky", retry=FLAKY)
async def async_flaky(token: str, failures: int) -> None:
    """An `async def` job failing transiently on its first `failures` attempts."""
    await _run_async(token, "conformance.async_flaky", f"fail<{failures}")


@app.job(name="conformance.async_limited", retry=LIMITED, time_limit=TIME_LIMIT)
async def async_limited(token: str, seconds: float) -> None:
    """An `async def` job running far past its 1 s time limit; the worker must stop it."""
    await _run_async(token, "conformance.async_limited", "effect", seconds=seconds)


if os.environ.get(NEW_CODE_ENV) == "1":

    @app.job(name=NEW_CODE_JOB, retry=FAST)
    def new_code(token: str) -> None:
        """Defined only by workers running the "new code" (see `NEW_CODE_ENV`)."""
        _run(token, NEW_CODE_JOB, "effect")
