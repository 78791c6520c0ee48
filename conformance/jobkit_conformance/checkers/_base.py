"""The shared parts of the checkers: the `Finding` record and small helpers."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobkit_conformance.history import History, Op, OpType
from jobkit_conformance.views import JobView, jobs

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


def replay_started(op: Op) -> float:
    """When a replay began: jobs it moves may start before the call returns."""
    invoked = op.value.get("invoked_at") if op.value else None
    return float(invoked) if invoked is not None else op.time
