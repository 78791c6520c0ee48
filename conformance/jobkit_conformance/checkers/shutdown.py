"""Shutdown with buffered jobs (`harness/buffered_shutdown.py`)."""

from __future__ import annotations

from jobkit_conformance.checkers._base import TOLERANCE, Finding, _accepted, _finding
from jobkit_conformance.history import F, History, OpType


def buffered_run_once(history: History) -> Finding:
    """After SIGTERM the stopping worker starts nothing new; every single-attempt job, the one
    running and the ones it had leased ahead, runs exactly once and succeeds."""
    terms = history.select(f=F.TERM, type=OpType.OK)
    if not terms:
        return Finding(passed=False, summary="no SIGTERM in the history")
    term = terms[0].time
    restarts = [op.time for op in history.select(f=F.WORKER, type=OpType.INVOKE) if op.time > term]
    restart = min(restarts, default=float("inf"))
    views = [v for v in _accepted(history) if v.spec.kind == "buffered"]
    problems: list[str] = []
    for v in views:
        before = [r for r in v.runs if r.start <= term + TOLERANCE]
        state = "running" if before else "buffered or waiting"
        stray = [r for r in v.runs if term + TOLERANCE < r.start < restart]
        if stray:
            problems.append(
                f"job {v.job_id} started {stray[0].start - term:.2f} s after the SIGTERM, before "
                "the next worker was up: the stopping worker started a new job"
            )
        if not v.runs and v.dead is not None:
            problems.append(
                f"job {v.job_id} ({state} at SIGTERM, max_attempts 1) was dead-lettered without "
                f"ever running: {v.dead.get('reason') or 'no reason given'}"
            )
        elif not v.runs:
            problems.append(f"job {v.job_id} ({state} at SIGTERM) never ran")
        elif len(v.runs) > 1:
            problems.append(f"job {v.job_id} ({state} at SIGTERM) ran {len(v.runs)} times")
        elif not v.succeeded:
            problems.append(f"job {v.job_id} ({state} at SIGTERM) ran but did not succeed")
    if not views:
        return Finding(passed=False, summary="no single-attempt job in the history")
    return _finding(
        problems,
        f"{len(views)} single-attempt job(s) ran once each across the SIGTERM",
        {"jobs": len(views)},
        "shutdown anomalies",
    )
