"""Per-job views of a history: what was enqueued, every execution, effects, dead letters.

Pure functions of a `History`; the checkers are built on them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobkit_conformance.history import F, History, JobSpec, Op, OpType


@dataclass(kw_only=True)
class Run:
    """One execution of a job, from the ledger: started at `start`; `end` is None if the run
    never reported (killed, time limit), `outcome` "ok", "fail" or "unknown"."""

    job_id: str
    process: str
    start: float
    end: float | None = None
    outcome: str = "unknown"
    last_seen: float | None = None
    error: str | None = None
    attempt: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.outcome == "unknown"

    @property
    def seen_until(self) -> float:
        """The last moment the run is known to have been alive."""
        return self.end if self.end is not None else (self.last_seen or self.start)


@dataclass(kw_only=True)
class JobView:
    job_id: str
    spec: JobSpec
    enqueued: OpType | None = None  # completion of the enqueue: OK, FAIL, UNKNOWN (None: open)
    enqueue_time: float = 0.0
    enqueue_error: str | None = None
    runs: list[Run] = field(default_factory=list)
    effects: int = 0
    dead: dict[str, Any] | None = None  # the DLQ entry seen by the last probe, if any

    @property
    def succeeded(self) -> bool:
        return any(r.outcome == "ok" for r in self.runs)

    def runs_after(self, t: float) -> list[Run]:
        return [r for r in self.runs if r.start >= t]


def dead_entries(history: History) -> list[dict[str, Any]]:
    """The dead letters seen by the last observation of each queue: dicts with id, reason,
    body_hex (the probe records one DEAD op per observation, value {"queue", "entries"})."""
    last: dict[str, Op] = {}
    for op in sorted(history.select(f=F.DEAD, type=OpType.OK), key=lambda op: op.time):
        last[str(op.value.get("queue", ""))] = op
    entries: list[dict[str, Any]] = []
    for op in last.values():
        entries.extend(op.value.get("entries", []))
    return entries


def runs(history: History) -> dict[str, list[Run]]:
    """Executions per job id, in start order. A run's invoke and completion are matched by
    (process, job id), in order."""
    open_runs: dict[tuple[str, str], list[Run]] = {}
    out: dict[str, list[Run]] = {}
    for op in history.sorted():
        if op.f is not F.RUN or op.job_id is None:
            continue
        slot = (op.process, op.job_id)
        if op.type is OpType.INVOKE:
            run = Run(
                job_id=op.job_id,
                process=op.process,
                start=op.time,
                attempt=op.value.get("attempt"),
            )
            open_runs.setdefault(slot, []).append(run)
            out.setdefault(op.job_id, []).append(run)
            continue
        pending = open_runs.get(slot)
        if not pending:
            continue
        run = pending.pop(0)
        run.outcome = {OpType.OK: "ok", OpType.FAIL: "fail"}.get(op.type, "unknown")
        run.end = op.time if op.type is not OpType.UNKNOWN else None
        run.last_seen = op.value.get("last_seen", op.time)
        run.error = op.value.get("error")
    for job_runs in out.values():
        job_runs.sort(key=lambda r: r.start)
    return out


def jobs(history: History) -> dict[str, JobView]:
    """One view per enqueued job id (jobs run but never enqueued are not here: see
    `unexpected_ids`)."""
    views: dict[str, JobView] = {}
    for op in history.select(f=F.ENQUEUE):
        if op.job_id is None:
            continue
        if op.type is OpType.INVOKE:
            views.setdefault(
                op.job_id,
                JobView(job_id=op.job_id, spec=JobSpec.from_value(op.value), enqueue_time=op.time),
            )
        elif op.job_id in views:
            view = views[op.job_id]
            # the strongest completion wins: a duplicate publish of an OK job stays OK
            if view.enqueued is not OpType.OK:
                view.enqueued = op.type
                view.enqueue_error = op.value.get("error")
    all_runs = runs(history)
    for job_id, view in views.items():
        view.runs = all_runs.get(job_id, [])
    for op in history.select(f=F.EFFECT, type=OpType.OK):
        if op.job_id in views:
            views[op.job_id].effects += 1
    for entry in dead_entries(history):
        view_for = views.get(str(entry.get("id")))
        if view_for is not None:
            view_for.dead = entry
    return views


def unexpected_ids(history: History) -> set[str]:
    """Job ids that ran, had an effect or sit in the DLQ without a successful or indeterminate
    enqueue (never enqueued, or enqueue failed), excluding raw messages the nemesis injected."""
    allowed = {
        op.job_id
        for op in history.select(f=F.ENQUEUE)
        if op.type in (OpType.OK, OpType.UNKNOWN) and op.job_id
    }
    allowed |= {op.job_id for op in history.select(f=F.INJECT) if op.job_id}
    seen = {op.job_id for op in history.ops if op.f in (F.RUN, F.EFFECT) and op.job_id}
    seen |= {str(e.get("id")) for e in dead_entries(history) if e.get("id")}
    return {j for j in seen if j not in allowed}


def faults(history: History) -> list[Op]:
    """Nemesis operations that can interrupt a run (kill, stop, term), by time."""
    return sorted(
        (
            op
            for op in history.ops
            if op.process == "nemesis" and op.f in (F.KILL, F.STOP, F.TERM) and op.type is OpType.OK
        ),
        key=lambda op: op.time,
    )
