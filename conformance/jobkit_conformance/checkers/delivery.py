"""Delivery: nothing lost, nothing unexpected, nothing run twice without a reason."""

from __future__ import annotations

from collections import Counter

from jobkit_conformance.checkers._base import TOLERANCE, Finding, _accepted, _finding
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import faults, jobs, unexpected_ids


def no_loss(history: History) -> Finding:
    """Every job whose enqueue succeeded either ran to success or sits in the DLQ (a job
    expected to be skipped as a duplicate of a completed key is accounted for by its key)."""
    accepted = [v for v in _accepted(history) if v.spec.outcome != "skip"]
    if not accepted:
        return Finding(passed=False, summary="no accepted job in the history to account for")
    lost = [v for v in accepted if not v.succeeded and v.dead is None]
    problems = [
        f"job {v.job_id} ({v.spec.kind}) was enqueued but never succeeded and is not in the "
        f"dead-letter queue ({len(v.runs)} run(s))"
        for v in lost
    ]
    return _finding(
        problems,
        f"all {len(accepted)} accepted jobs accounted for",
        {"jobs": len(accepted), "lost": len(lost)},
        "lost",
    )


def no_unexpected(history: History) -> Finding:
    """Nothing runs or reaches the DLQ that was not enqueued (or whose enqueue failed)."""
    extra = sorted(unexpected_ids(history))
    problems = [
        f"job {j} ran or was dead-lettered but was never successfully enqueued" for j in extra
    ]
    return _finding(problems, "no unexpected jobs", {"unexpected": len(extra)}, "unexpected")


def outcomes_as_specified(history: History) -> Finding:
    """Jobs meant to succeed succeed (and are not dead-lettered); jobs meant to die are in the
    DLQ and never succeeded."""
    problems: list[str] = []
    for v in _accepted(history):
        if v.spec.outcome == "succeed" and v.dead is not None:
            problems.append(f"job {v.job_id} ({v.spec.kind}) should succeed but is dead-lettered")
        if v.spec.outcome == "skip" and v.dead is not None:
            problems.append(f"job {v.job_id} duplicates a completed key but is dead-lettered")
        if v.spec.outcome == "dead" and v.succeeded:
            problems.append(f"job {v.job_id} ({v.spec.kind}) should fail but succeeded")
        if v.succeeded and v.dead is not None:
            problems.append(f"job {v.job_id} succeeded and is also in the dead-letter queue")
    return _finding(
        problems, "every job ended as specified", {"anomalies": len(problems)}, "anomalies"
    )


def no_duplicate_runs(history: History) -> Finding:
    """Without faults, no job starts more than once."""
    accepted = _accepted(history)
    dups = [v for v in accepted if len(v.runs) > 1]
    problems = [f"job {v.job_id} started {len(v.runs)} times without a fault" for v in dups]
    extra = sum(len(v.runs) - 1 for v in dups)
    what = "duplicated"
    for op in history.select(f=F.DEPTH, type=OpType.OK):
        expected = op.value.get("expected")
        depth = op.value.get("depth")
        if expected is not None and depth != expected:
            if isinstance(depth, int) and depth < expected:
                what = "missing on the broker" if not dups else what
                problems.append(
                    f"{expected} jobs were enqueued but right after the enqueues returned the "
                    f"broker held only {depth} messages: {expected - depth} sent job(s) were "
                    "not stored when enqueue returned"
                )
            else:
                problems.append(
                    f"{expected} jobs were enqueued but the broker holds {depth} messages for "
                    "them: more messages than jobs"
                )
    return _finding(
        problems, f"{len(accepted)} jobs, each started once", {"duplicated": extra}, what
    )


def queue_drained(history: History) -> Finding:
    """Once the jobs have settled, the broker holds nothing more for them: every message was
    acknowledged or dead-lettered (an ack that does not remove would leave it there)."""
    finals = [op for op in history.select(f=F.DEPTH, type=OpType.OK) if op.value.get("final")]
    if not finals:
        return Finding(passed=False, summary="no final queue depth was observed")
    problems = [
        f"queue {op.value.get('queue')} still holds {op.value.get('depth')} message(s) after "
        "its jobs settled"
        for op in finals
        if op.value.get("depth")
    ]
    return _finding(
        problems, f"{len(finals)} queue(s) drained", {"queues": len(finals)}, "not drained"
    )


def effect_once_per_key(history: History) -> Finding:
    """Each idempotency key (else job id) took effect exactly once, however often published."""
    per_key: Counter[str] = Counter()
    views = jobs(history)
    expected: set[str] = set()
    for v in views.values():
        key = v.spec.key or v.job_id
        if v.enqueued is OpType.OK and v.spec.outcome == "succeed":
            expected.add(key)
    for op in history.select(f=F.EFFECT, type=OpType.OK):
        key = op.value.get("key") or op.job_id or "?"
        per_key[key] += 1
    problems = [f"key {k} took effect {n} times" for k, n in sorted(per_key.items()) if n > 1]
    problems += [f"key {k} never took effect" for k in sorted(expected - set(per_key))]
    return _finding(
        problems,
        f"{len(expected)} keys, each took effect once",
        {"keys": len(expected), "duplicated": sum(n - 1 for n in per_key.values() if n > 1)},
        "effect anomalies",
    )


def recovered(history: History) -> Finding:
    """Every run interrupted by a fault (kill, stop) is started again after the fault.

    Counts the interrupted runs and the recovery time: fault -> next start of the same job."""
    views = jobs(history)
    fault_ops = faults(history)
    times: list[float] = []
    problems: list[str] = []
    interrupted = 0
    for v in views.values():
        for run in v.runs:
            if not run.interrupted:
                continue
            hit = [op for op in fault_ops if op.time >= run.start - TOLERANCE]
            if not hit:
                continue
            interrupted += 1
            fault_time = hit[0].time
            later = [r for r in v.runs if r.start > fault_time]
            if not later:
                problems.append(
                    f"job {v.job_id} was interrupted by {hit[0].f} at "
                    f"{fault_time:.3f} and never started again"
                )
            else:
                times.append(later[0].start - fault_time)
    counts: dict[str, float] = {"interrupted": interrupted, "recovered": len(times)}
    if times:
        counts["recovery_max_s"] = round(max(times), 3)
        counts["recovery_min_s"] = round(min(times), 3)
    if interrupted == 0 and not problems:
        return Finding(
            passed=False,
            summary="no run was interrupted by the fault: the scenario did not exercise recovery",
            counts=counts,
        )
    ok = f"{len(times)} interrupted run(s) restarted, recovery max {max(times or [0]):.2f} s"
    return _finding(problems, ok, counts, "not recovered")


def redelivered_while_stopped(history: History) -> Finding:
    """A job whose worker is stopped (SIGSTOP) past its lease is started again by another
    worker before the stopped one resumes. Counts the takeover time (stop -> next start)."""
    stops = history.select(f=F.STOP, type=OpType.OK)
    conts = history.select(f=F.CONT, type=OpType.OK)
    if not stops:
        return Finding(passed=False, summary="no worker was stopped")
    problems: list[str] = []
    times: list[float] = []
    views = jobs(history)
    for stop in stops:
        resumed = min((c.time for c in conts if c.time >= stop.time), default=float("inf"))
        for v in views.values():
            held = [
                r for r in v.runs if r.start <= stop.time and (r.end is None or r.end > stop.time)
            ]
            if not held:
                continue
            later = [r for r in v.runs if stop.time < r.start <= resumed]
            if later:
                times.append(later[0].start - stop.time)
            else:
                problems.append(
                    f"job {v.job_id} was held by a stopped worker and not started again before "
                    f"the worker resumed {resumed - stop.time:.1f} s later"
                )
    if not times and not problems:
        return Finding(passed=False, summary="no job was running when the worker was stopped")
    counts: dict[str, float] = {"held": len(times) + len(problems), "taken_over": len(times)}
    if times:
        counts["recovery_max_s"] = round(max(times), 3)
    ok = f"{len(times)} job(s) taken over after {max(times or [0]):.2f} s"
    return _finding(problems, ok, counts, "not taken over")


def started_once(history: History, kinds: tuple[str, ...]) -> Finding:
    """Jobs of these kinds start exactly once (e.g. a job running longer than its lease)."""
    problems: list[str] = []
    checked = 0
    for v in _accepted(history):
        if v.spec.kind not in kinds:
            continue
        checked += 1
        if len(v.runs) != 1:
            problems.append(f"job {v.job_id} ({v.spec.kind}) started {len(v.runs)} times")
    if checked == 0:
        return Finding(passed=False, summary=f"no job of kind {kinds} in the history")
    return _finding(problems, f"{checked} job(s) started exactly once", {}, "duplicated")


def in_flight_finished(history: History) -> Finding:
    """On SIGTERM, runs already in flight finish (within the grace) instead of being cut off."""
    terms = history.select(f=F.TERM, type=OpType.OK)
    if not terms:
        return Finding(passed=False, summary="no SIGTERM in the history")
    t = terms[0].time
    problems: list[str] = []
    n = 0
    for v in jobs(history).values():
        for run in v.runs:
            if run.start <= t and (run.end is None or run.end >= t):
                n += 1
                if run.outcome != "ok":
                    problems.append(f"job {v.job_id} was running at SIGTERM and did not finish")
    if n == 0:
        return Finding(passed=False, summary="no job was running at SIGTERM")
    return _finding(
        problems, f"{n} in-flight job(s) finished after SIGTERM", {"in_flight": n}, "cut off"
    )
