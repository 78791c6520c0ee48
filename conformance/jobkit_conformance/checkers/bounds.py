"""Bounds: how late a job may start, and how soon a crashed job must run again.

The bounds come from what the backend declares (`jobkit.Capabilities.redelivery_bound` and
`due_bound`), recorded in the history as a CLAIM operation of the harness, plus the worker's
poll interval, plus a stated slack. The slack covers what is neither the broker's nor the
worker's promise: handing the message to an idle job process and the job writing its start to
the ledger on a loaded 2-core machine (measured: well under 1 s; the slack is generous so that
a correct backend passes run after run, and small enough that a backend several seconds late
fails).

The lateness bounds also add how long the worker took to start an undelayed job sent between
the due time and the end of the declared precision: the scenarios send a "pulse" of such jobs
while they measure (`harness.pulse`), so a machine slowed down by other work, or a backlog the
due job joins, does not fail a correct backend, while a backend that makes due jobs late, and
not others, still fails.

Each checker reports the measured figures (p50, p99, max) whether it passes or not.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jobkit_conformance.checkers._base import TOLERANCE, Finding, _accepted, _finding
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import jobs

REDELIVERY_SLACK = 3.0
"""Seconds allowed beyond the declared redelivery bound and the poll interval."""

ORPHAN_SLACK = 15.0
"""Seconds allowed beyond the redelivery bound and the poll interval for a worker to notice that
a job process died while a grandchild keeps its pipes open (it cannot rely on their EOF; it has
to look at the process itself). The grandchild lives 60 s: a worker that waits for EOF fails."""

LATENESS_SLACK = 1.5
"""Seconds allowed beyond the declared scheduling precision, the poll interval and the pulse."""

PULSE_WINDOW = (1.0, 0.5)
"""Pulse jobs sent this long before / after a due time measure the load at that time."""


def pulses(history: History) -> list[tuple[float, float]]:
    """(enqueue time, seconds until it started) of every pulse job that ran."""
    return sorted(
        (v.enqueue_time, v.runs[0].start - v.enqueue_time)
        for v in _accepted(history)
        if v.spec.kind == "pulse" and v.runs
    )


def load_at(pulses: list[tuple[float, float]], due: float, *, spread: float = 0.0) -> float:
    """The longest start delay of an undelayed job sent around `due` (0 without pulses):
    those sent from `PULSE_WINDOW` before `due` to `PULSE_WINDOW` after `due + spread`, and
    the last one sent before that window and the first one sent after it.

    `spread` is the declared scheduling precision for the job: a backend may make it ready
    any time up to then, and from then it waits as long as an undelayed job sent then (behind
    the same backlog). The neighbours count because a producer slowed down by the same load
    may send none inside the window (one enqueue blocked for 1.5 s on a loaded 2-core
    machine), and a job sent before `due` that started long after it shows the worker was not
    starting jobs then. `pulses`: (enqueue time, start delay) sorted by enqueue time, as
    `pulses` returns."""
    before, after = PULSE_WINDOW
    sent = [t for t, _ in pulses]
    first = max(0, bisect.bisect_left(sent, due - before) - 1)
    last = bisect.bisect_right(sent, due + max(0.0, spread) + after) + 1
    return max((d for _, d in pulses[first:last]), default=0.0)


def declared(history: History) -> dict[str, Any] | None:
    """The run's declared bounds (the last CLAIM operation), or None if none was recorded."""
    claims = history.select(f=F.CLAIM, type=OpType.OK)
    return claims[-1].value if claims else None


def percentiles(values: Sequence[float], prefix: str) -> dict[str, float]:
    """p50, p99 and max of `values` (nearest rank), as counts named ``<prefix>_p50_s`` etc."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return {
        f"{prefix}_p50_s": round(rank(0.50), 3),
        f"{prefix}_p99_s": round(rank(0.99), 3),
        f"{prefix}_max_s": round(ordered[-1], 3),
    }


def redelivery_deadline(
    redelivery_bound_s: float, poll_s: float, slack: float = REDELIVERY_SLACK
) -> float:
    """How long after its consumer died or stalled a job must be running again: the declared
    redelivery bound, plus the poll interval, plus `slack`."""
    return redelivery_bound_s + poll_s + slack


def _no_claim() -> Finding:
    return Finding(passed=False, summary="the history records no declared bounds (CLAIM)")


def redelivered_within_bound(history: History, *, slack: float = REDELIVERY_SLACK) -> Finding:
    """A run cut off by a SIGKILL of its worker starts again, on a worker that was already
    polling, within the backend's declared redelivery bound for the run's lease, plus the poll
    interval, plus `slack`. Recovery time: the kill -> the next start of the same job."""
    claim = declared(history)
    if claim is None:
        return _no_claim()
    bound = redelivery_deadline(float(claim["redelivery_bound_s"]), float(claim["poll_s"]), slack)
    kills = sorted(history.select(f=F.KILL, type=OpType.OK), key=lambda op: op.time)
    views = jobs(history)
    # a replacement worker proves it is polling by running a job of kind "ready" enqueued
    # after the kill on a queue only it serves: recovery counts from then at the earliest
    ready_runs = sorted(
        (v.enqueue_time, v.runs[0].start)
        for v in views.values()
        if v.spec.kind == "ready" and v.runs
    )
    problems: list[str] = []
    times: list[float] = []
    for v in views.values():
        for run in v.runs:
            if not run.interrupted:
                continue
            kill = next((k for k in kills if k.time >= run.start - TOLERANCE), None)
            if kill is None:
                continue
            later = [r for r in v.runs if r.start > kill.time]
            if not later:
                problems.append(
                    f"job {v.job_id} was cut off by a SIGKILL of {_target(kill.value)} and never "
                    "ran again"
                )
                continue
            ready = next((start for sent, start in ready_runs if sent >= kill.time), kill.time)
            recovery = max(0.0, later[0].start - max(kill.time, ready))
            times.append(recovery)
            if recovery > bound:
                problems.append(
                    f"job {v.job_id} ran again {recovery:.2f} s after a SIGKILL of "
                    f"{_target(kill.value)} (counted from when a worker was polling); "
                    f"{claim.get('backend', 'the backend')} declares redelivery within "
                    f"{float(claim['redelivery_bound_s']):g} s for a {float(claim['lease_s']):g} s "
                    f"lease (bound {bound:g} s with the {float(claim['poll_s']):g} s poll and "
                    f"{slack:g} s slack)"
                )
    counts: dict[str, float] = {"interrupted": len(times) + len(problems), "bound_s": bound}
    counts.update(percentiles(times, "recovery"))
    if not times and not problems:
        return Finding(
            passed=False,
            summary="no run was cut off by a SIGKILL: the scenario did not exercise recovery",
            counts=counts,
        )
    longest = max(times or [0.0])
    ok = f"{len(times)} killed run(s) ran again within {longest:.2f} s (bound {bound:g} s)"
    return _finding(problems, ok, counts, "not redelivered in time")


def _target(value: dict[str, Any]) -> str:
    return str(value.get("target") or "its worker")


def _precision(claim: dict[str, Any], delay: float) -> float:
    """The declared scheduling precision for a job delayed by `delay` s."""
    return float(claim["scheduling_precision_s"]) + max(0.0, delay) * float(
        claim.get("delay_rounding", 0.0)
    )


def _due_bound(claim: dict[str, Any], delay: float, slack: float) -> float:
    return _precision(claim, delay) + float(claim["poll_s"]) + slack


def _parts(claim: dict[str, Any], slack: float, load: float) -> str:
    return (
        f"{float(claim['scheduling_precision_s']):g} s declared scheduling precision + "
        f"{float(claim['poll_s']):g} s poll + {slack:g} s slack + {load:.2f} s the worker took "
        "then to start an undelayed job"
    )


@dataclass(frozen=True, kw_only=True)
class _Due:
    """One job start measured against its due time; `what` names it in a failure."""

    due: float
    start: float
    delay: float
    what: str


def _lateness(history: History, samples: list[_Due], slack: float, noun: str) -> Finding:
    """Judge each sample against the declared due bound plus the load at its due time."""
    claim = declared(history)
    if claim is None:
        return _no_claim()
    sent = pulses(history)
    problems: list[str] = []
    late: list[float] = []
    loads: list[float] = []
    for d in samples:
        lateness = d.start - d.due
        late.append(max(0.0, lateness))
        load = load_at(sent, d.due, spread=_precision(claim, d.delay))
        loads.append(load)
        bound = _due_bound(claim, d.delay, slack) + load
        if lateness > bound:
            problems.append(
                f"{d.what} started {lateness:.2f} s after it was due; the bound is {bound:.2f} s "
                f"({_parts(claim, slack, load)})"
            )
    if not samples:
        return Finding(passed=False, summary=f"no {noun} in the history to measure")
    counts: dict[str, float] = {noun: len(late), "pickup_max_s": round(max(loads), 3)}
    counts.update(percentiles(late, "lateness"))
    ok = f"{len(late)} {noun} started at most {max(late):.2f} s after due"
    return _finding(problems, ok, counts, "started late")


def delays_on_time(history: History, *, slack: float = LATENESS_SLACK) -> Finding:
    """A delayed job starts no later than its due time plus the backend's declared scheduling
    precision (for its delay), the poll interval, `slack` and the load then (see the module).
    Lateness: first start - due."""
    samples = [
        _Due(
            due=v.spec.not_before,
            start=v.runs[0].start,
            delay=v.spec.not_before - v.enqueue_time,
            what=f"delayed job {v.job_id}",
        )
        for v in _accepted(history)
        # a delayed job that never ran is reported by delay.not_before
        if v.spec.not_before is not None and v.runs
    ]
    return _lateness(history, samples, slack, "delayed jobs")


def retries_on_time(history: History, *, slack: float = LATENESS_SLACK) -> Finding:
    """A retry starts no later than the failed attempt's end plus the policy's longest backoff
    for it, plus the backend's declared scheduling precision, the poll interval, `slack` and
    the load then. Lateness: next start - (failure + longest backoff), 0 when earlier."""
    samples: list[_Due] = []
    for v in _accepted(history):
        for n, (prev, nxt) in enumerate(zip(v.runs, v.runs[1:], strict=False), start=1):
            if prev.outcome != "fail" or prev.end is None or n > len(v.spec.backoff_max):
                continue
            longest = v.spec.backoff_max[n - 1]
            samples.append(
                _Due(
                    due=prev.end + longest,
                    start=nxt.start,
                    delay=longest,
                    what=f"job {v.job_id}: attempt {n + 1}, due {longest:g} s (the longest "
                    f"backoff) after attempt {n} failed,",
                )
            )
    return _lateness(history, samples, slack, "retries")
