"""Retries: attempts within policy, backoff respected, permanent errors not retried."""

from __future__ import annotations

from collections import Counter

from jobkit_conformance.checkers._base import (
    TOLERANCE,
    Finding,
    _accepted,
    _finding,
    replay_started,
)
from jobkit_conformance.history import F, History, OpType


def attempts_within_policy(history: History) -> Finding:
    """No job starts more often than its max attempts allow: each copy of the message (the
    original, every duplicate publish, every replay) has its own budget of max attempts."""
    copies: Counter[str] = Counter()
    for op in history.select(f=F.DUPLICATE, type=OpType.OK):
        copies[op.job_id or ""] += 1
    for op in history.select(f=F.REPLAY, type=OpType.OK):
        for job_id in op.value.get("ids", []):
            copies[job_id] += 1
    problems: list[str] = []
    beyond = 0
    for v in _accepted(history):
        allowed = v.spec.max_attempts * (1 + copies[v.job_id])
        if len(v.runs) > allowed:
            beyond += len(v.runs) - allowed
            problems.append(
                f"job {v.job_id} ({v.spec.kind}) started {len(v.runs)} times; max_attempts is "
                f"{v.spec.max_attempts} for each of its {1 + copies[v.job_id]} cop(ies)"
            )
    return _finding(problems, "no attempts beyond policy", {"beyond_policy": beyond}, "over policy")


def exhausted_exactly(history: History) -> Finding:
    """Jobs that always fail transiently use up exactly their max attempts (before a replay)."""
    replays = sorted(replay_started(op) for op in history.select(f=F.REPLAY, type=OpType.OK))
    first_replay = replays[0] if replays else float("inf")
    problems: list[str] = []
    checked = 0
    for v in _accepted(history):
        if v.spec.kind != "always_fail":
            continue
        checked += 1
        n = sum(1 for r in v.runs if r.start < first_replay)
        if n != v.spec.max_attempts:
            problems.append(
                f"job {v.job_id} always fails and was attempted {n} times; max_attempts is "
                f"{v.spec.max_attempts}"
            )
    if checked == 0:
        return Finding(passed=False, summary="no always-failing job in the history")
    return _finding(problems, f"{checked} job(s) attempted exactly max_attempts times", {}, "wrong")


def succeeds_after_transient(history: History) -> Finding:
    """A job failing N times transiently succeeds at attempt N+1."""
    problems: list[str] = []
    checked = 0
    for v in _accepted(history):
        if v.spec.kind != "flaky":
            continue
        checked += 1
        ok_at = [i + 1 for i, r in enumerate(v.runs) if r.outcome == "ok"]
        if not ok_at:
            problems.append(f"job {v.job_id} never succeeded after {len(v.runs)} attempt(s)")
        elif ok_at[0] != v.spec.failures + 1:
            problems.append(
                f"job {v.job_id} succeeded at attempt {ok_at[0]}, expected {v.spec.failures + 1}"
            )
    if checked == 0:
        return Finding(passed=False, summary="no flaky job in the history")
    return _finding(problems, f"{checked} flaky job(s) succeeded on time", {}, "wrong")


def backoff_lower_bound(history: History) -> Finding:
    """The wait between a failed attempt n and the next start is at least the policy's lower
    bound for n (the job's `backoff_min`)."""
    problems: list[str] = []
    gaps = 0
    shortest = float("inf")
    for v in _accepted(history):
        if not v.spec.backoff_min:
            continue
        for n, (prev, nxt) in enumerate(zip(v.runs, v.runs[1:], strict=False), start=1):
            if prev.outcome != "fail" or prev.end is None or n > len(v.spec.backoff_min):
                continue
            gaps += 1
            gap = nxt.start - prev.end
            bound = v.spec.backoff_min[n - 1]
            shortest = min(shortest, gap - bound)
            if gap < bound - TOLERANCE:
                problems.append(
                    f"job {v.job_id}: attempt {n + 1} started {gap:.3f} s after attempt {n} "
                    f"failed; the policy's lower bound is {bound:.3f} s"
                )
    if gaps == 0:
        return Finding(passed=False, summary="no retried attempt in the history to measure")
    counts: dict[str, float] = {"gaps": gaps, "min_slack_s": round(shortest, 3)}
    return _finding(problems, f"{gaps} backoff gap(s) respected the lower bound", counts, "early")


def permanent_not_retried(history: History) -> Finding:
    """A job that fails permanently (Reject) runs once and goes to the DLQ."""
    problems: list[str] = []
    checked = 0
    for v in _accepted(history):
        if not v.spec.permanent:
            continue
        checked += 1
        if len(v.runs) != 1:
            problems.append(f"job {v.job_id} failed permanently but ran {len(v.runs)} times")
        if v.dead is None:
            problems.append(f"job {v.job_id} failed permanently but is not in the DLQ")
    if checked == 0:
        return Finding(passed=False, summary="no permanently failing job in the history")
    return _finding(problems, f"{checked} permanent failure(s) not retried", {}, "retried")
