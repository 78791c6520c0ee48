"""Time: limits enforced, delays respected, priorities ordered, refusals at enqueue."""

from __future__ import annotations

import itertools

from jobkit_conformance.checkers._base import TOLERANCE, Finding, _accepted, _finding
from jobkit_conformance.checkers.bounds import declared, load_at, pulses
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import jobs


def time_limit_enforced(history: History, *, slack: float = 1.5) -> Finding:
    """A job past its time limit is stopped (it is not seen alive much past the limit), the
    stop counts as a failed attempt, and the job ends in the DLQ after max attempts. A
    stubborn job (it swallows what the worker raises in it) may run the declared
    `time_limit_margin` longer: then its process must be killed."""
    problems: list[str] = []
    checked = 0
    longest = 0.0
    claim = declared(history) or {}
    margin = float(claim.get("time_limit_margin_s", 0.0))
    for v in _accepted(history):
        if v.spec.time_limit is None:
            continue
        checked += 1
        allowed = v.spec.time_limit + (margin if v.spec.kind == "stubborn" else 0.0)
        for run in v.runs:
            alive = run.seen_until - run.start
            longest = max(longest, alive)
            if run.outcome == "ok":
                problems.append(f"job {v.job_id} finished although it runs past its limit")
            elif alive > allowed + slack:
                stop = "killed" if v.spec.kind == "stubborn" else "stopped"
                problems.append(
                    f"job {v.job_id} ({v.spec.kind}) was still running {alive:.2f} s after "
                    f"its start; its time limit is {v.spec.time_limit} s and it must be {stop} "
                    f"by {allowed:g} s (+{slack:g} s slack; declared margin {margin:g} s)"
                )
        if len(v.runs) != v.spec.max_attempts:
            problems.append(
                f"job {v.job_id}: {len(v.runs)} attempt(s); each stop should count, "
                f"max_attempts is {v.spec.max_attempts}"
            )
        if v.dead is None:
            problems.append(f"job {v.job_id} is not in the DLQ after its time limits")
    if checked == 0:
        return Finding(passed=False, summary="no time-limited job in the history")
    return _finding(
        problems,
        f"{checked} job(s) stopped at the limit",
        {"longest_run_s": round(longest, 3)},
        "problems",
    )


def not_before(history: History, *, late_limit: float = 10.0) -> Finding:
    """A delayed job runs, not before its due time, and not absurdly late (`late_limit` s
    after it is due, plus how long the worker then took to start an undelayed job, as in
    `bounds`: a worker that never looks at delayed messages would never run it)."""
    problems: list[str] = []
    sent = pulses(history)
    checked = 0
    early = 0.0
    late = 0.0
    for v in _accepted(history):
        if v.spec.not_before is None:
            continue
        checked += 1
        if not v.runs:
            problems.append(f"delayed job {v.job_id} never ran")
            continue
        for run in v.runs:
            if run.start < v.spec.not_before - TOLERANCE:
                early = max(early, v.spec.not_before - run.start)
                problems.append(
                    f"job {v.job_id} started {v.spec.not_before - run.start:.3f} s before its "
                    "due time"
                )
        lateness = v.runs[0].start - v.spec.not_before
        late = max(late, lateness)
        load = load_at(sent, v.spec.not_before)
        if lateness > late_limit + load:
            problems.append(
                f"job {v.job_id} started {lateness:.1f} s after its due time (the limit is "
                f"{late_limit:g} s + {load:.1f} s the worker took then to start an undelayed job)"
            )
    if checked == 0:
        return Finding(passed=False, summary="no delayed job in the history")
    counts = {"early_s": round(early, 3), "late_max_s": round(late, 3)}
    return _finding(problems, f"{checked} delayed job(s) on time", counts, "off time")


def priority_order(history: History) -> Finding:
    """With one consumer and a backlog, higher priorities start first: counts inversions."""
    accepted = _accepted(history)
    views = [v for v in accepted if v.runs]
    if len(views) < 2:
        return Finding(passed=False, summary="fewer than two prioritised jobs ran")
    if len(views) < len(accepted):
        return Finding(
            passed=False, summary=f"only {len(views)} of {len(accepted)} prioritised jobs ran"
        )
    order = sorted(views, key=lambda v: v.runs[0].start)
    prios = [v.spec.priority for v in order]
    inversions = sum(1 for a, b in itertools.pairwise(prios) if b > a)
    if inversions:
        return Finding(
            passed=False,
            summary=f"{inversions} inversion(s): start order by priority was {prios}",
            counts={"inversions": inversions},
        )
    return Finding(passed=True, summary=f"{len(prios)} jobs ran highest priority first")


def enqueue_refused(history: History, *, error: str) -> Finding:
    """Every enqueue of kind "refused" failed with `error`, and nothing of it ran."""
    problems: list[str] = []
    checked = 0
    for v in jobs(history).values():
        if v.spec.kind != "refused":
            continue
        checked += 1
        if v.enqueued is OpType.OK:
            problems.append(f"enqueue of {v.job_id} succeeded; it should raise {error}")
        elif v.enqueued is OpType.FAIL and v.enqueue_error != error:
            problems.append(f"enqueue of {v.job_id} raised {v.enqueue_error}, not {error}")
        elif v.enqueued is None:
            problems.append(f"enqueue of {v.job_id} never returned")
        if v.runs:
            problems.append(f"job {v.job_id} ran although its enqueue was refused")
    for op in history.select(f=F.DEPTH, type=OpType.OK):
        if op.value.get("depth", 0):
            problems.append(f"{op.value['depth']} message(s) reached the queue despite the refusal")
    if checked == 0:
        return Finding(passed=False, summary="no refused enqueue in the history")
    return _finding(
        problems, f"{checked} enqueue(s) raised {error}", {"refused": checked}, "not refused"
    )
