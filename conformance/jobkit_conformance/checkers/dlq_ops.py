"""Dead-letter operations through the backend under test: listing shows every dead letter
intact, replay runs each exactly once (also when two replays race), purge takes dead letters
only. Reads the history of the ``dlq_ops`` scenario (`harness/dead_letter_ops.py`)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from jobkit import SerializationError
from jobkit.spi import decode
from jobkit_conformance.checkers._base import Finding, _finding, replay_started
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.views import JobView, jobs

REPLAYED = "dlq_ops.replayed"
PURGED = "dlq_ops.purged"
KEPT = ("dlq_ops.in_flight", "dlq_ops.ready", "dlq_ops.delayed")


def _of_kind(history: History, *kinds: str) -> list[JobView]:
    return [v for v in jobs(history).values() if v.spec.kind in kinds and v.enqueued is OpType.OK]


def list_complete(history: History) -> Finding:
    """The listing through the backend holds every dead letter once, each with a reason and
    the envelope as enqueued."""
    listings = history.select(f=F.LIST, type=OpType.OK)
    if not listings:
        return Finding(passed=False, summary="the dead letters were never listed")
    expected = {v.job_id: v for v in _of_kind(history, REPLAYED)}
    entries: list[dict[str, Any]] = listings[0].value.get("entries", [])
    listed = Counter(str(e.get("id")) for e in entries)
    problems: list[str] = []
    missing = sorted(set(expected) - set(listed))
    if missing:
        problems.append(
            f"the listing shows {len(expected) - len(missing)} of the {len(expected)} dead "
            f"letters the broker holds; missing: {', '.join(missing[:3])}"
            + (" ..." if len(missing) > 3 else "")
        )
    problems += [f"dead letter {i} is listed {n} times" for i, n in sorted(listed.items()) if n > 1]
    for entry in entries:
        v = expected.get(str(entry.get("id")))
        if v is None:
            continue
        if not entry.get("reason"):
            problems.append(f"dead letter {v.job_id} is listed without a reason")
        try:
            env = decode(bytes.fromhex(str(entry.get("body_hex", ""))))
        except (SerializationError, ValueError) as exc:
            problems.append(
                f"dead letter {v.job_id} is listed with a body that does not decode: {exc}"
            )
            continue
        if env.id != v.job_id or env.job != v.spec.job or list(env.args) != list(v.spec.args):
            problems.append(
                f"dead letter {v.job_id} is listed with another envelope: id {env.id}, job "
                f"{env.job}, args {list(env.args)}; enqueued {v.spec.job} {list(v.spec.args)}"
            )
    return _finding(
        problems,
        f"{len(entries)} dead letter(s) listed intact",
        {"listed": len(entries), "expected": len(expected)},
        "listing anomalies",
    )


def replay_once(history: History) -> Finding:
    """Each replayed dead letter runs exactly once after its replay, also when two replays
    race; the replays together report each dead letter moved once."""
    replays = sorted(history.select(f=F.REPLAY, type=OpType.OK), key=replay_started)
    if not replays:
        return Finding(passed=False, summary="no replay in the history")
    views = _of_kind(history, REPLAYED)
    problems: list[str] = []
    pending = {v.job_id for v in views}
    raced = 0
    for op in replays:
        ids = op.value.get("ids")
        counts: list[Any] = op.value["counts"] if "race" in op.value else [op.value.get("count")]
        targets = [i for i in (ids if ids is not None else sorted(pending)) if i in pending]
        pending -= set(targets)
        if "race" in op.value:
            raced += len(targets)
        errors = [c for c in counts if not isinstance(c, int)]
        if errors:
            problems.append(f"a replay raised instead of moving the dead letters: {errors[0]}")
            continue
        if sum(counts) != len(targets):
            how = "racing replays reported" if "race" in op.value else "replay reported"
            problems.append(
                f"the {how} moving {' + '.join(str(c) for c in counts)} dead letter(s); "
                f"{len(targets)} were in the dead-letter queue"
            )
    depth = [op for op in history.select(f=F.DEPTH, type=OpType.OK) if "replayed" in op.value]
    if depth and depth[0].value.get("depth") != depth[0].value["replayed"]:
        problems.append(
            f"after the replays the queue holds {depth[0].value.get('depth')} message(s) for "
            f"{depth[0].value['replayed']} replayed dead letter(s)"
            + (
                ": a replay sent duplicates"
                if depth[0].value.get("depth", 0) > depth[0].value["replayed"]
                else ""
            )
        )
    for v in views:
        first_replay = next(
            (replay_started(op) for op in replays if _covers(op, v.job_id, views)), None
        )
        if first_replay is None:
            continue
        after = v.runs_after(first_replay)
        if not after:
            problems.append(f"job {v.job_id} was replayed but never ran again")
        elif len(after) > 1:
            problems.append(
                f"job {v.job_id} ran {len(after)} times after it was replayed once"
                + (" (by racing replays)" if _raced(replays, v.job_id) else "")
            )
    return _finding(
        problems,
        f"{len(views)} replayed job(s) ran once each ({raced} of them replayed by racing calls)",
        {"replayed": len(views), "raced": raced},
        "replay anomalies",
    )


def _covers(op: Any, job_id: str, views: list[JobView]) -> bool:
    ids = op.value.get("ids")
    return ids is None or job_id in ids


def _raced(replays: list[Any], job_id: str) -> bool:
    singles = {i for op in replays if "race" not in op.value for i in op.value.get("ids") or []}
    return job_id not in singles


def purge_dead_only(history: History) -> Finding:
    """The purge reports and removes the dead letters; every job that was ready, delayed or in
    flight at the purge stays on the queue and runs."""
    purges = history.select(f=F.PURGE, type=OpType.OK)
    if not purges:
        return Finding(passed=False, summary="no purge in the history")
    purge = purges[0]
    doomed = {v.job_id for v in _of_kind(history, PURGED)}
    problems: list[str] = []
    count = purge.value.get("count")
    if count != len(doomed):
        problems.append(
            f"purge reported {count} dead letter(s) removed; {len(doomed)} were waiting"
        )
    depth = {
        op.value.get("purge"): op.value.get("depth")
        for op in history.select(f=F.DEPTH, type=OpType.OK)
        if op.value.get("purge")
    }
    before, after = depth.get("before"), depth.get("after")
    if isinstance(before, int) and isinstance(after, int) and after < before:
        problems.append(
            f"the purge removed {before - after} message(s) that were not dead letters: the "
            f"queue held {before} ready, delayed or in-flight message(s) before it, {after} after"
        )
    later = [
        op
        for op in sorted(history.select(f=F.DEAD, type=OpType.OK), key=lambda op: op.time)
        if op.time >= purge.time
    ]
    if later:
        left = [str(e.get("id")) for e in later[0].value.get("entries", [])]
        kept = sorted(set(left) & doomed)
        if kept:
            problems.append(f"{len(kept)} purged dead letter(s) still listed: {', '.join(kept)}")
    started = float(purge.value.get("invoked_at") or purge.time)
    waiting = [v for v in _of_kind(history, *KEPT) if v.enqueue_time <= started]
    for v in waiting:
        state = v.spec.kind.split(".", 1)[1].replace("_", " ")
        if not v.succeeded:
            where = "is in the dead-letter queue" if v.dead else "never ran to success"
            problems.append(f"job {v.job_id}, {state} when the dead letters were purged, {where}")
    if not waiting:
        return Finding(passed=False, summary="no job was waiting when the dead letters were purged")
    return _finding(
        problems,
        f"purge removed {count} dead letter(s); {len(waiting)} waiting job(s) untouched",
        {"purged": float(count or 0), "waiting": len(waiting)},
        "purge anomalies",
    )
