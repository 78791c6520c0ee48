"""Run one envelope's job in the current process and report the outcome. Never raises."""

from __future__ import annotations

import json
import logging
import traceback
from typing import TYPE_CHECKING

from jobkit.envelope import Envelope
from jobkit.errors import Reject, Retry
from jobkit.worker._outcome import Outcome
from jobkit.worker.context import JobContext, _current

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.worker")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(app: App, envelope: Envelope, attempt: int) -> Outcome:
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
        result = job.fn(*envelope.args, **envelope.kwargs)
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
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError):
        log.warning(
            "job %s (%s) returned a %s, which is not JSON; it succeeded, its result is not kept",
            envelope.id,
            envelope.job,
            type(result).__name__,
        )
        result = None
    return Outcome(ok=True, result=result)
