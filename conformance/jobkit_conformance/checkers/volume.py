"""Volume: thousands of jobs under repeated crashes, counted job by job.

Lost: accepted, never succeeded, not dead-lettered. Unexpected: run but never enqueued.
Duplicated: runs beyond the first; a crash may legitimately cause them (a job that finished but
whose acknowledgement died with its worker runs again; a stalled worker's buffered copy runs
after SIGCONT although its lease ran out and another worker ran the job), so only a repeat with
no fault (SIGKILL or SIGSTOP) between the job's enqueue and the repeat counts against the
backend; the scenario sends its last jobs after its last fault so that such repeats can show.
Up to `SPONTANEOUS` of the jobs may repeat without a fault: an at-least-once broker may deliver a
message twice on its own (SQS standard queues "occasionally"; a lease that lapses while a
loaded machine's worker holds a message in its buffer); a backend that does it more fails.
"""

from __future__ import annotations

from jobkit_conformance.checkers._base import Finding, _accepted, _finding
from jobkit_conformance.history import F, History, Op, OpType
from jobkit_conformance.views import JobView, unexpected_ids

SPONTANEOUS = 0.01
"""The share of volume jobs that may run twice with no fault to explain it."""


def _volume(history: History) -> list[JobView]:
    return [v for v in _accepted(history) if v.spec.kind == "volume"]


def _fault_ops(history: History) -> list[Op]:
    return sorted(
        (
            op
            for op in history.ops
            if op.process == "nemesis" and op.f in (F.KILL, F.STOP) and op.type is OpType.OK
        ),
        key=lambda op: op.time,
    )


def _faults(history: History) -> list[float]:
    return [op.time for op in _fault_ops(history)]


NEAR = 1.0
"""A lost job whose neighbours (sent just before and after it) started this close to a fault
was most likely in the hands of the worker that fault hit."""


def _why_lost(v: JobView, views: list[JobView], faults: list[Op]) -> str:
    """What the history says about a lost job: its runs, or when the jobs sent next to it
    started, and the fault closest to then."""
    if v.runs:
        return f"ran {len(v.runs)} time(s), cut off, never again"
    by_send = sorted(views, key=lambda x: x.enqueue_time)
    i = by_send.index(v)
    starts = sorted(x.runs[0].start for x in by_send[max(0, i - 3) : i + 4] if x.runs)
    if not starts:
        return "never ran, nor did the jobs sent next to it"
    when = starts[len(starts) // 2]
    near = min(faults, key=lambda op: abs(op.time - when), default=None)
    if near is not None and abs(near.time - when) <= NEAR:
        return (
            f"never ran; the jobs sent next to it started {abs(near.time - when):.2f} s from the "
            f"{near.f.upper()} of worker {near.value.get('worker', '?')}: it was most likely in "
            "that worker's hands and the backend lost it there"
        )
    return "never ran, and no fault came near when the jobs sent next to it ran: lost in sending"


def _throughput(views: list[JobView]) -> dict[str, float]:
    """Jobs succeeded per second, from the first start to the last successful end."""
    starts = [r.start for v in views for r in v.runs]
    ends = [r.end for v in views for r in v.runs if r.outcome == "ok" and r.end is not None]
    if not starts or not ends or max(ends) <= min(starts):
        return {}
    done = sum(1 for v in views if v.succeeded)
    return {"throughput_jobs_s": round(done / (max(ends) - min(starts)), 1)}


def volume_no_loss(history: History) -> Finding:
    """Every accepted volume job succeeded (none is meant to be dead-lettered)."""
    views = _volume(history)
    if not views:
        return Finding(passed=False, summary="no accepted volume job in the history")
    lost = [v for v in views if not v.succeeded]
    faults = _fault_ops(history)
    counts: dict[str, float] = {"jobs": len(views), "lost": len(lost), "faults": len(faults)}
    counts.update(_throughput(views))
    problems = [
        f"job {v.job_id} was enqueued but never succeeded"
        + (" (dead-lettered)" if v.dead is not None else "")
        + f": {_why_lost(v, views, faults)}"
        for v in lost
    ]
    if problems:
        never = sum(1 for v in lost if not v.runs)
        problems[0] = (
            f"{len(lost)} of {len(views)} jobs lost ({never} never ran, "
            f"{len(lost) - never} cut off and never run again; {len(faults)} worker fault(s) in "
            "the run); first: " + problems[0]
        )
    return _finding(
        problems,
        f"all {len(views)} jobs succeeded under {len(faults)} fault(s)",
        counts,
        "lost",
    )


def volume_no_unexpected(history: History) -> Finding:
    """Nothing runs in the volume scenario that was not enqueued."""
    extra = sorted(unexpected_ids(history))
    problems = [f"job {j} ran but was never successfully enqueued" for j in extra]
    return _finding(problems, "no unexpected jobs", {"unexpected": len(extra)}, "unexpected")


def volume_duplicates_explained(history: History) -> Finding:
    """Every repeated run of a volume job follows a fault that came after the job's enqueue."""
    views = _volume(history)
    if not views:
        return Finding(passed=False, summary="no accepted volume job in the history")
    faults = _faults(history)
    duplicated = 0
    problems: list[str] = []
    for v in views:
        if len(v.runs) < 2:
            continue
        duplicated += len(v.runs) - 1
        first = v.runs[0]
        for again in v.runs[1:]:
            if not any(v.enqueue_time <= t <= again.start for t in faults):
                problems.append(
                    f"job {v.job_id} ran again {again.start - first.start:.2f} s after its first "
                    "start with no fault since it was enqueued"
                )
                break
    counts: dict[str, float] = {"duplicated": duplicated, "unexplained": len(problems)}
    allowed = int(len(views) * SPONTANEOUS)
    if len(problems) <= allowed:
        ok = (
            f"{duplicated} repeated run(s), {len(problems)} with no fault since the job's enqueue "
            f"(at most {allowed} allowed)"
        )
        return Finding(passed=True, summary=ok, counts=counts, details=tuple(problems))
    problems[0] = (
        f"{len(problems)} of {len(views)} jobs ran again with no fault since their enqueue "
        f"(at most {allowed} allowed); first: " + problems[0]
    )
    return _finding(problems, "", counts, "unexplained duplicates")
