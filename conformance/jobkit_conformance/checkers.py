"""Checkers: pure functions from a `History` to a `Finding`.

Each counts what it looks for (lost, duplicated, unexpected, recovered jobs, attempts beyond
policy, dead-letter anomalies) and names the jobs involved. None of them does I/O, so each is
unit-tested on histories written by hand (tests/conformance/test_checkers.py).

Backends are at-least-once: a checker never demands exactly one execution where a fault may
legitimately cause another; it demands idempotent effects, bounded attempts and no loss.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from jobkit import SerializationError, decode
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import JobView, dead_entries, faults, jobs, unexpected_ids

# Clock tolerance when comparing times written by different processes on the same machine.
TOLERANCE = 0.02


@dataclass(frozen=True, kw_only=True)
class Finding:
    passed: bool
    summary: str
    counts: dict[str, float] = field(default_factory=dict)
    details: tuple[str, ...] = ()


def _finding(problems: list[str], ok: str, counts: dict[str, float], what: str) -> Finding:
    if problems:
        return Finding(
            passed=False,
            summary=f"{len(problems)} {what}: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            counts=counts,
            details=tuple(problems),
        )
    return Finding(passed=True, summary=ok, counts=counts)


def _accepted(history: History) -> list[JobView]:
    return [v for v in jobs(history).values() if v.enqueued is OpType.OK and v.spec.kind != "raw"]


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
    for op in history.select(f=F.DEPTH, type=OpType.OK):
        expected = op.value.get("expected")
        if expected is not None and op.value.get("depth") != expected:
            problems.append(
                f"{expected} jobs were enqueued but the broker holds {op.value.get('depth')} "
                "messages for them"
            )
    return _finding(
        problems, f"{len(accepted)} jobs, each started once", {"duplicated": extra}, "duplicated"
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
    replays = sorted(op.time for op in history.select(f=F.REPLAY, type=OpType.OK))
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


def dead_after_exhaustion(history: History) -> Finding:
    """Jobs meant to fail for good sit in the DLQ at the end."""
    expected = [v for v in _accepted(history) if v.spec.outcome == "dead"]
    missing = [v for v in expected if v.dead is None]
    problems = [
        f"job {v.job_id} ({v.spec.kind}) failed {len(v.runs)} time(s) but is not in the "
        "dead-letter queue"
        for v in missing
    ]
    if not expected:
        return Finding(passed=False, summary="no job in the history was meant to be dead-lettered")
    return _finding(
        problems,
        f"{len(expected)} job(s) dead-lettered",
        {"expected": len(expected), "missing": len(missing)},
        "missing from the DLQ",
    )


def dead_letters_intact(history: History) -> Finding:
    """Each DLQ entry of ours carries the original envelope (id, job, args) and a reason."""
    views = jobs(history)
    problems: list[str] = []
    checked = 0
    seen: Counter[str] = Counter(str(e.get("id")) for e in dead_entries(history))
    for job_id, n in sorted(seen.items()):
        if n > 1 and job_id in views:
            problems.append(f"dead letter {job_id} is in the dead-letter queue {n} times")
    for entry in dead_entries(history):
        job_id = str(entry.get("id"))
        v = views.get(job_id)
        if v is None:
            continue
        checked += 1
        if not entry.get("reason"):
            problems.append(f"dead letter {job_id} has no reason")
        try:
            env = decode(bytes.fromhex(str(entry.get("body_hex", ""))))
        except (SerializationError, ValueError) as exc:
            problems.append(f"dead letter {job_id}: body does not decode: {exc}")
            continue
        if env.id != job_id or env.job != v.spec.job or list(env.args) != list(v.spec.args):
            problems.append(
                f"dead letter {job_id}: envelope changed (id {env.id}, job {env.job}, "
                f"args {list(env.args)}; enqueued {v.spec.job} {list(v.spec.args)})"
            )
    if checked == 0:
        return Finding(passed=False, summary="no dead letter of ours to inspect")
    return _finding(problems, f"{checked} dead letter(s) intact", {"entries": checked}, "damaged")


def replayed(history: History) -> Finding:
    """After a replay, each replayed job starts again."""
    replay_ops = history.select(f=F.REPLAY, type=OpType.OK)
    if not replay_ops:
        return Finding(passed=False, summary="no replay in the history")
    views = jobs(history)
    problems: list[str] = []
    n = 0
    for op in replay_ops:
        for job_id in op.value.get("ids", []):
            n += 1
            v = views.get(job_id)
            if v is None or not v.runs_after(op.time):
                problems.append(f"job {job_id} was replayed but did not run again")
        if op.value.get("count", 0) < len(op.value.get("ids", [])):
            problems.append(f"replay moved {op.value.get('count')} of {op.value.get('ids')}")
    return _finding(problems, f"{n} replayed job(s) ran again", {"replayed": n}, "not replayed")


def time_limit_enforced(history: History, *, slack: float = 1.5) -> Finding:
    """A job past its time limit is stopped (it is not seen alive much past the limit), the
    stop counts as a failed attempt, and the job ends in the DLQ after max attempts."""
    problems: list[str] = []
    checked = 0
    longest = 0.0
    for v in _accepted(history):
        if v.spec.time_limit is None:
            continue
        checked += 1
        for run in v.runs:
            alive = run.seen_until - run.start
            longest = max(longest, alive)
            if run.outcome == "ok":
                problems.append(f"job {v.job_id} finished although it runs past its limit")
            elif alive > v.spec.time_limit + slack:
                problems.append(
                    f"job {v.job_id} was still running {alive:.2f} s after its start; its "
                    f"time limit is {v.spec.time_limit} s"
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


def not_before(history: History, *, late_limit: float = 10.0) -> Finding:
    """A delayed job runs, not before its due time, and not absurdly late (`late_limit` s
    after it is due: a worker that never looks at delayed messages would never run it)."""
    problems: list[str] = []
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
        if lateness > late_limit:
            problems.append(f"job {v.job_id} started {lateness:.1f} s after its due time")
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


def poison_handled(history: History) -> Finding:
    """An undecodable message ends in the DLQ with its bytes intact, and the worker serves the
    next job (the job enqueued after the injection ran on the same worker process)."""
    injects = history.select(f=F.INJECT, type=OpType.OK)
    if not injects:
        return Finding(passed=False, summary="no message was injected")
    problems: list[str] = []
    entries = dead_entries(history)
    for op in injects:
        body = op.value.get("body_hex")
        if not any(e.get("body_hex") == body for e in entries):
            problems.append("the undecodable message is not in the dead-letter queue")
    alive = [op for op in history.select(f=F.WORKER, type=OpType.OK) if op.process == "probe"]
    if not alive or any(not op.value.get("alive", True) for op in alive):
        problems.append("the worker process died after receiving the undecodable message")
    after = [v for v in _accepted(history) if v.enqueue_time >= injects[0].time and v.succeeded]
    if not after:
        problems.append("no job enqueued after the undecodable message ran")
    return _finding(problems, "poison dead-lettered, worker kept serving", {}, "problems")


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
