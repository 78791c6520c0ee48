"""Async jobs (`harness/async_jobs.py`): they really run (their body, after awaiting, writes the
ledger), are retried and time-limited as sync jobs are, and handles report what happened."""

from __future__ import annotations

from jobkit_conformance.checkers._base import Finding, _accepted, _finding, all_of
from jobkit_conformance.checkers.bounds import declared
from jobkit_conformance.checkers.retries import succeeds_after_transient
from jobkit_conformance.checkers.timing import time_limit_enforced
from jobkit_conformance.history import F, History, OpType


def async_ran(history: History) -> Finding:
    """Every ``async def`` job that should succeed ran its body to success, once, and its handle
    does not report success for a job whose body never ran."""
    results = {op.job_id: op.value for op in history.select(f=F.RESULT, type=OpType.OK)}
    problems: list[str] = []
    checked = 0
    for v in _accepted(history):
        if v.spec.kind != "async":
            continue
        checked += 1
        state = results.get(v.job_id, {}).get("state")
        if not v.runs and state == "succeeded":
            problems.append(
                f"async job {v.job_id} never ran its body, yet its handle reports 'succeeded': "
                "the coroutine was not awaited"
            )
        elif not v.runs:
            told = f" (its handle reports {state!r})" if state else ""
            problems.append(f"async job {v.job_id} never ran{told}")
        elif not v.succeeded:
            problems.append(f"async job {v.job_id} ran {len(v.runs)} time(s), never to success")
        elif v.effects != 1:
            problems.append(f"async job {v.job_id} took effect {v.effects} times")
        if v.runs and v.succeeded and state is not None and state != "succeeded":
            problems.append(f"async job {v.job_id} succeeded but its handle reports {state!r}")
    if checked == 0:
        return Finding(passed=False, summary="no async job in the history")
    return _finding(
        problems, f"{checked} async job(s) ran to success", {"jobs": checked}, "anomalies"
    )


def async_like_sync(history: History) -> Finding:
    """`async_ran`, and the retry and time-limit checks on the async scenario's jobs (the
    time-limit one where the backend claims time limits: else the job is refused at enqueue)."""
    if (declared(history) or {}).get("time_limits", True):
        return all_of(async_ran, succeeds_after_transient, time_limit_enforced)(history)
    return all_of(async_ran, succeeds_after_transient)(history)
