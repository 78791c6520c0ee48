"""The reconciliation of one migration: per queue, where every job went."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class QueueReport:
    """Counts for one queue. `found` is every job seen at the source (moved or left); `left`
    counts the jobs not moved, by reason; `at_target` is how many of the moved jobs the target
    confirmed having. `waited_for` is the most jobs source workers were seen running while the
    migration waited for them (those that ended at the source are not jobs to move; those
    still running at the end are in `left`). `stale_at_source`: messages the source still
    counts that may be copies of jobs already moved, not jobs (`QueueStats.stale`); they are
    not in `remaining_at_source`. Mutable while the migration runs; read it when `migrate`
    returns."""

    queue: str
    expected: int = 0  # the source's depth when the migration started (for progress)
    found: int = 0
    copied: int = 0
    skipped: int = 0
    left: Counter[str] = field(default_factory=Counter)
    at_target: int = 0
    remaining_at_source: int = 0
    stale_at_source: int = 0
    waited_for: int = 0

    @property
    def moved(self) -> int:
        return self.copied + self.skipped

    @property
    def accounted(self) -> bool:
        """Every job found is moved and confirmed at the target, nothing is left, and the
        source holds no job this report does not name."""
        return (
            not self.left
            and self.found == self.moved
            and self.at_target == self.moved
            and self.remaining_at_source == 0
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "found_at_source": self.found,
            "copied": self.copied,
            "skipped_present": self.skipped,
            "left": sum(self.left.values()),
            "left_reasons": dict(sorted(self.left.items())),
            "found_at_target": self.at_target,
            "remaining_at_source": self.remaining_at_source,
            "stale_copies_at_source": self.stale_at_source,
            "waited_for_running": self.waited_for,
            "accounted": self.accounted,
        }


@dataclass(kw_only=True)
class Report:
    source: str
    target: str
    dry_run: bool
    queues: list[QueueReport]
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Exit 0: every job accounted for (a dry run: nothing stops the migration)."""
        if self.dry_run:
            return all(not q.left for q in self.queues)
        return all(q.accounted for q in self.queues)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "warnings": self.warnings,
            "queues": [q.to_dict() for q in self.queues],
        }
