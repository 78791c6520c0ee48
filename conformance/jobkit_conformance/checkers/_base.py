"""The shared parts of the checkers: the `Finding` record and small helpers."""

from __future__ import annotations

from collections.abc import Callable
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


def all_of(*parts: Callable[[History], Finding]) -> Callable[[History], Finding]:
    """A checker that passes when every part passes; reports the first failure."""

    def check(history: History) -> Finding:
        findings = [part(history) for part in parts]
        failed = [f for f in findings if not f.passed]
        counts: dict[str, float] = {}
        for f in findings:
            counts.update(f.counts)
        if failed:
            details = tuple(d for f in failed for d in f.details)
            return Finding(passed=False, summary=failed[0].summary, counts=counts, details=details)
        return Finding(passed=True, summary="; ".join(f.summary for f in findings), counts=counts)

    return check
