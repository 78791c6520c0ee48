"""Durability: what a killed producer, a broker restart and a broker outage must not lose.

Each failure names what was observed: which jobs whose enqueue had returned never ran, what the
broker held (probe depth) around the fault, whether the worker process outlived the outage.
"""

from __future__ import annotations

from jobkit_conformance.checkers._base import Finding, _accepted, _finding
from jobkit_conformance.history import F, History, Op, OpType
from jobkit_conformance.views import JobView


def _lost(views: list[JobView]) -> list[JobView]:
    return [v for v in views if not v.succeeded and v.dead is None]


def _depths(history: History, flag: str) -> list[int]:
    return [
        int(op.value.get("depth", -1))
        for op in history.select(f=F.DEPTH, type=OpType.OK)
        if op.value.get(flag)
    ]


def producer_killed_no_loss(history: History) -> Finding:
    """Every job whose enqueue returned in a producer that was SIGKILLed right after runs."""
    killed = [op for op in history.select(f=F.PRODUCER, type=OpType.OK) if op.value.get("code")]
    if not killed:
        return Finding(passed=False, summary="no producer was killed: nothing to judge")
    reported = [v for v in _accepted(history) if v.spec.kind == "produced"]
    if not reported:
        return Finding(
            passed=False,
            summary="the killed producer reported no enqueue as returned: nothing to judge",
        )
    lost = _lost(reported)
    after_kill = [
        int(op.value.get("depth", -1))
        for op in history.select(f=F.DEPTH, type=OpType.OK)
        if "final" not in op.value
    ]
    held = f"; right after the kill the broker held {after_kill[0]}" if after_kill else ""
    problems = [
        f"job {v.job_id}: its enqueue returned in the producer, which was SIGKILLed right "
        "after, and the job never ran and is not in the dead-letter "
        f"queue: the send was not durable when enqueue returned ({len(lost)} of "
        f"{len(reported)} lost{held})"
        for v in lost
    ]
    return _finding(
        problems,
        f"all {len(reported)} jobs enqueued by the killed producer ran",
        {"reported": len(reported), "lost": len(lost)},
        "lost after the producer was killed",
    )


def _stopped_at(history: History) -> Op | None:
    stops = history.select(f=F.BROKER_STOP, type=OpType.INVOKE)
    return stops[0] if stops else None


def restart_no_loss(history: History) -> Finding:
    """Every job whose enqueue returned before the broker was stopped runs after the restart."""
    stop = _stopped_at(history)
    if stop is None or not history.select(f=F.BROKER_START, type=OpType.OK):
        return Finding(passed=False, summary="the broker was not stopped and started again")
    before = [v for v in _accepted(history) if v.enqueue_time <= stop.time]
    if not before:
        return Finding(passed=False, summary="no job was enqueued before the broker restart")
    lost = _lost(before)
    depth_before = _depths(history, "before_restart")
    depth_after = _depths(history, "restarted")
    held = ""
    if depth_before and depth_after:
        held = (
            f"; the broker held {depth_before[0]} message(s) before the restart and "
            f"{depth_after[0]} after it"
        )
    problems = [
        f"job {v.job_id} ({v.spec.kind}) was enqueued before the broker restart and never ran "
        f"after it ({len(lost)} of {len(before)} lost{held})"
        for v in lost
    ]
    return _finding(
        problems,
        f"all {len(before)} jobs enqueued before the broker restart ran",
        {"jobs": len(before), "lost": len(lost)},
        "lost in the broker restart",
    )


def outage_worker_survives(history: History) -> Finding:
    """The worker started before the outage is the same live process after it, and runs a job
    enqueued after the broker came back."""
    if not history.select(f=F.BROKER_START, type=OpType.OK):
        return Finding(passed=False, summary="the broker was not stopped and started again")
    problems: list[str] = []
    seen = [op for op in history.select(f=F.WORKER, type=OpType.OK) if op.value.get("outage")]
    if not seen:
        problems.append("the worker was not observed after the outage")
    for op in seen:
        if not op.value.get("alive"):
            problems.append(
                f"worker {op.value.get('name')} (pid {op.value.get('pid')}) exited during or "
                "after the broker outage instead of waiting for the broker"
            )
    after = [v for v in _accepted(history) if v.spec.kind == "after_outage"]
    if not after:
        problems.append("no enqueue was accepted within 60 s after the broker came back")
    problems += [
        f"job {v.job_id}, enqueued after the broker came back, never ran ({len(v.runs)} run(s))"
        for v in after
        if not v.succeeded
    ]
    return _finding(
        problems,
        "the worker rode out the outage and ran the jobs enqueued after it",
        {"worker_alive": float(bool(seen) and all(op.value.get("alive") for op in seen))},
        "outage problems",
    )


def outage_no_loss(history: History) -> Finding:
    """Every job accepted before or during the outage completes (or is dead-lettered)."""
    stop = _stopped_at(history)
    if stop is None:
        return Finding(passed=False, summary="the broker was not stopped")
    mine = [v for v in _accepted(history) if v.spec.kind in ("outage", "during_outage")]
    if not mine:
        return Finding(passed=False, summary="no job was enqueued around the outage")
    lost = _lost(mine)
    problems = []
    for v in lost:
        if v.spec.kind == "during_outage":
            problems.append(
                f"job {v.job_id}: enqueue returned while the broker was stopped (instead of "
                "raising BrokerUnavailable) and the job never ran: dropped"
            )
        else:
            problems.append(
                f"job {v.job_id} ({v.spec.kind}), enqueued before the outage, never completed "
                f"after the broker came back ({len(v.runs)} run(s), none succeeded)"
            )
    refused = [
        op
        for op in history.select(f=F.ENQUEUE, type=OpType.FAIL)
        if op.value.get("error") == "BrokerUnavailable"
    ]
    return _finding(
        problems,
        f"all {len(mine)} jobs enqueued around the outage completed"
        + (f" ({len(refused)} enqueue(s) during it raised BrokerUnavailable)" if refused else ""),
        {"jobs": len(mine), "lost": len(lost)},
        "lost in the outage",
    )
