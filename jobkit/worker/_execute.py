"""Run one envelope's job in the current process and report the outcome. Never raises.

An ``async def`` job runs to completion on a fresh event loop (`jobkit._invoke`); a plain job
that returns an awaitable, and a result that is not exact JSON, are permanent failures.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING

from jobkit._invoke import invoke
from jobkit._json import check_round_trip
from jobkit.envelope import Envelope
from jobkit.errors import Reject, Retry, SerializationError
from jobkit.worker._outcome import Outcome
from jobkit.worker.context import JobContext, _current

if TYPE_CHECKING:
    from jobkit.job import JobSet

log = logging.getLogger("jobkit.worker")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(app: JobSet, envelope: Envelope, attempt: int) -> Outcome:
    job = app.jobs.get(envelope.job)
    if job is None:
        return Outcome(
            ok=False,
            transient=False,
            error=f"UnknownJob: {envelope.job!r} is not defined in app {app.name!r}",
        )
    try:
        job.signature.bind(*envelope.args, **envelope.kwargs)
    except TypeError as exc:
        return Outcome(ok=False, transient=False, error=f"arguments do not fit: {exc}")
    token = _current.set(
        JobContext(
            id=envelope.id,
            job=envelope.job,
            queue=envelope.queue,
            attempt=attempt,
            max_attempts=envelope.max_attempts,
            idempotency_key=envelope.idempotency_key,
        )
    )
    try:
        result = invoke(job.name, job.fn, envelope.args, envelope.kwargs)
    except Retry as exc:
        delay = exc.delay.total_seconds() if exc.delay is not None else None
        return Outcome(ok=False, error=describe(exc), transient=True, retry_delay=delay)
    except Reject as exc:
        return Outcome(ok=False, error=describe(exc), transient=False)
    except Exception as exc:
        log.debug("job %s attempt %d failed:\n%s", envelope.id, attempt, traceback.format_exc())
        return Outcome(ok=False, error=describe(exc), transient=job.retry.is_transient(exc))
    finally:
        _current.reset(token)
    try:
        check_round_trip(result, "result", what=f"job {job.name!r} ran, but its result is not JSON")
    except SerializationError as exc:
        return Outcome(ok=False, error=describe(exc), transient=False)
    return Outcome(ok=True, result=result)
