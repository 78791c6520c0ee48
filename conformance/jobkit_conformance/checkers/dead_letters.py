"""Dead letters: present after exhaustion, intact, replayable; poison handled."""

from __future__ import annotations

from collections import Counter

from jobkit import SerializationError
from jobkit.spi import decode
from jobkit_conformance.checkers._base import Finding, _accepted, _finding, replay_started
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import dead_entries, jobs


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
            if v is None or not v.runs_after(replay_started(op)):
                problems.append(f"job {job_id} was replayed but did not run again")
        if op.value.get("count", 0) < len(op.value.get("ids", [])):
            problems.append(f"replay moved {op.value.get('count')} of {op.value.get('ids')}")
    return _finding(problems, f"{n} replayed job(s) ran again", {"replayed": n}, "not replayed")


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
