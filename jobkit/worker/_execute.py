"""Run one envelope's job in the current process and report the outcome. Never raises.

An ``async def`` job runs to completion on a fresh event loop (`jobkit._invoke`); a plain job
that returns an awaitable, and a result that is not exact JSON, are permanent failures.

The app's middleware runs around the call (`jobkit.middleware`): ``before_run`` before it,
``after_run`` with what becomes of the attempt. That is decided here (`_outcome.decide`, the
same pure function the supervisor applies), and a retry's delay travels in the outcome, so the
delay the hooks see is the one the supervisor uses.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobkit._invoke import invoke
from jobkit._json import check_round_trip
from jobkit.envelope import Envelope
from jobkit.errors import Reject, Retry, SerializationError
from jobkit.middleware import Hooks, RunResult, RunStatus, context_of
from jobkit.worker._outcome import Action, Decision, Outcome, decide
from jobkit.worker.context import _current

if TYPE_CHECKING:
    from jobkit.job import JobDef, JobSet

log = logging.getLogger(__name__)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run(app: JobSet, envelope: Envelope, attempt: int, hooks: Hooks | None = None) -> Outcome:
    """Run attempt number `attempt` (1-based) of `envelope`'s job, with `hooks` around it."""
    job = app.jobs.get(envelope.job)
    if job is None:
        return Outcome(
            ok=False,
            transient=False,
            error=f"UnknownJob: {envelope.job!r} is not defined in app {app.name!r}",
        )
    try:
        job.check_arguments(envelope.args, envelope.kwargs)
    except TypeError as exc:
        return Outcome(ok=False, transient=False, error=f"arguments do not fit: {exc}")
    context = context_of(envelope, attempt)
    token = _current.set(context)
    started = time.monotonic()
    try:
        if hooks:
            hooks.before_run(context, envelope)
        outcome = _call(job, envelope, attempt)
        decision = decide(envelope, attempt, outcome, job.retry)
        if decision.action is Action.RELEASE:
            # decided here, so that `after_run` reports the delay the supervisor uses
            outcome = replace(outcome, retry_delay=decision.delay.total_seconds())
        if hooks:
            elapsed = timedelta(seconds=time.monotonic() - started)
            hooks.after_run(context, envelope, run_result(outcome, decision, elapsed))
        return outcome
    finally:
        _current.reset(token)


def run_result(outcome: Outcome, decision: Decision, duration: timedelta) -> RunResult:
    """What `Middleware.after_run` is told of an attempt's outcome and its decision."""
    error = outcome.error
    time_limit = bool(error and error.startswith("TimeLimitExceeded"))
    if decision.action is Action.ACK:
        return RunResult(status=RunStatus.SUCCEEDED, duration=duration)
    retrying = decision.action is Action.RELEASE
    return RunResult(
        status=RunStatus.RETRYING if retrying else RunStatus.DEAD,
        duration=duration,
        error=error,
        delay=decision.delay if retrying else None,
        reason=None if retrying else decision.reason,
        time_limit=time_limit,
    )


def _call(job: JobDef[Any, Any], envelope: Envelope, attempt: int) -> Outcome:
    try:
        result = invoke(job.name, job.fn, envelope.args, envelope.kwargs, asynchronous=job.is_async)
    except Retry as exc:
        delay = exc.delay.total_seconds() if exc.delay is not None else None
        return Outcome(ok=False, error=describe(exc), transient=True, retry_delay=delay)
    except Reject as exc:
        return Outcome(ok=False, error=describe(exc), transient=False)
    except Exception as exc:
        log.debug("job %s attempt %d failed:\n%s", envelope.id, attempt, traceback.format_exc())
        return Outcome(ok=False, error=describe(exc), transient=job.retry.is_transient(exc))
    try:
        check_round_trip(result, "result", what=f"job {job.name!r} ran, but its result is not JSON")
    except SerializationError as exc:
        return Outcome(ok=False, error=describe(exc), transient=False)
    return Outcome(ok=True, result=result)
