"""The migration loop: export, check, import, confirm, commit; per queue, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from jobkit.backend import Backend
from jobkit.capabilities import Capabilities, MigrationSupport
from jobkit.envelope import decode
from jobkit.errors import JobkitError, SerializationError, UnsupportedFeature
from jobkit.migrate._report import QueueReport, Report
from jobkit.records import ExportedJob, QueueStats

RUNNING = "running on a source worker: not copied while leased (run migrate again when it ends)"
HIDDEN_DELAYED = "delayed: the source hands it out only when due (run migrate again then)"
DUE_SOON = (
    "delayed, not exportable before due (due within the export lease, or sent without an "
    "index entry): left to fall due (run migrate again then)"
)
ARRIVED = "arrived at the source during the migration (run migrate again)"
BOTH_SIDES = "on both sides: its export lease ran out and a source worker took it"

_IDLE_POLL = 0.2  # seconds between looks while source workers still hold jobs


@dataclass(frozen=True, kw_only=True)
class Migration:
    """What to migrate. `queues` empty: every queue the source knows. `lease` is the export
    lease (a batch must be imported and committed within it). `wait` is how long to wait for
    jobs that source workers are running before leaving them (reported, exit 1)."""

    queues: tuple[str, ...] = ()
    include_dead: bool = False
    dry_run: bool = False
    batch: int = 500
    lease: timedelta = timedelta(minutes=5)
    wait: timedelta = timedelta(seconds=30)


def migrate(
    source: Backend,
    target: Backend,
    options: Migration,
    *,
    source_name: str,
    target_name: str,
    on_progress: Callable[[QueueReport], None] | None = None,
) -> Report:
    """Move the jobs of `options.queues` from `source` to `target`; return the reconciliation.

    Raises `UnsupportedFeature` before moving anything when either side cannot migrate, or
    when dead letters are asked for and a side cannot carry them. A job the target cannot
    honour (a priority, a delay, its size) is left at the source and reported, never altered.
    Blocking; not thread-safe (one migrator per pair of queues at a time).
    """
    source_support = _support(source, "export jobs from")
    target_support = _support(target, "import jobs into")
    if not source_support.exports:
        name = source.capabilities.name
        raise UnsupportedFeature(
            asked=f"export jobs from {name}",
            supported=f"{name} is a migration target only: it cannot hand out waiting jobs",
            change="Drain its queues with workers instead, or migrate into it",
        )
    if options.include_dead and not (source_support.dead_letters and target_support.dead_letters):
        side = source if not source_support.dead_letters else target
        raise UnsupportedFeature(
            asked="migrate dead letters (--include-dead)",
            supported=f"{side.capabilities.name} cannot export or import dead letters",
            change="Migrate without --include-dead, or replay or purge the dead letters first",
        )
    queues = list(options.queues) or [s.queue for s in source.stats()]
    start = {s.queue: s for s in source.stats(queues)}
    report = Report(
        source=source_name,
        target=target_name,
        dry_run=options.dry_run,
        queues=[QueueReport(queue=q, expected=_depth(start[q], options)) for q in queues],
        warnings=_warnings(source, target, source_support, target_support),
    )
    dead_left = sum(s.dead for s in start.values()) if not options.include_dead else 0
    if dead_left:
        report.warnings.append(
            f"{dead_left} dead letter(s) stay at the source (add --include-dead to move them)"
        )
    for queue_report in report.queues:
        if options.dry_run:
            queue_report.found = queue_report.expected
            continue
        _Queue(source, target, options, queue_report, source_support, on_progress).run()
    return report


def _support(backend: Backend, doing: str) -> MigrationSupport:
    support = backend.capabilities.migration
    if support is None:
        name = backend.capabilities.name
        raise UnsupportedFeature(
            asked=f"{doing} {name}",
            supported=f"{name} does not implement migration (Capabilities.migration is None)",
            change="Drain its queues with workers instead, or use a backend that supports it",
        )
    return support


def _warnings(
    source: Backend, target: Backend, src: MigrationSupport, dst: MigrationSupport
) -> list[str]:
    warnings = []
    if not src.delayed_before_due:
        warnings.append(
            f"{source.capabilities.name} hands out delayed jobs only when due: they are "
            "left until then and reported"
        )
    if dst.dedup == "none":
        warnings.append(
            f"{target.capabilities.name} cannot tell which jobs it already has (no shared job "
            "store): if this run is killed, the next one may send its last batch twice"
        )
    return warnings


def _takes_anything(caps: Capabilities, source: Capabilities) -> bool:
    """Whether `caps.check` can refuse no envelope from `source` (any delay, as many
    priorities, time limits, any size), so the migration need not decode each job to ask."""
    return (
        caps.max_delay is None
        and caps.priorities >= source.priorities
        and caps.time_limits
        and caps.max_message_bytes is None
    )


def _depth(stats: QueueStats, options: Migration) -> int:
    dead = stats.dead if options.include_dead else 0
    return stats.ready + stats.in_flight + stats.delayed + dead


class _Queue:
    """The migration of one queue; fills in its `QueueReport`."""

    def __init__(
        self,
        source: Backend,
        target: Backend,
        options: Migration,
        report: QueueReport,
        support: MigrationSupport,
        on_progress: Callable[[QueueReport], None] | None,
    ) -> None:
        self.source = source
        self.target = target
        self.options = options
        self.report = report
        self.support = support
        self.on_progress = on_progress
        self.refused: dict[str, ExportedJob] = {}  # held at the source until the end

    def run(self) -> None:
        deadline = time.monotonic() + self.options.wait.total_seconds()
        try:
            while True:
                jobs = self.source.export_jobs(
                    [self.report.queue],
                    limit=self.options.batch,
                    lease=self.options.lease,
                    include_dead=self.options.include_dead,
                )
                if jobs:
                    self._move(jobs)
                elif (pending := self._pending()) and time.monotonic() < deadline:
                    self.report.waited_for = max(self.report.waited_for, pending[1])
                    time.sleep(_IDLE_POLL)
                else:
                    break
                if self.on_progress is not None:
                    self.on_progress(self.report)
        finally:
            if self.refused:
                self.source.release_export(list(self.refused.values()))
        self._reconcile()

    def _pending(self) -> tuple[int, int] | None:
        """None when the source holds no job of this queue that a later export could return;
        else (how many, how many of them source workers hold). Such jobs are running on a
        worker, held by a killed migrator's export lease, or due within the export lease (our
        refused ones and delayed ones the source hides until due aside)."""
        stats = self.source.stats([self.report.queue])[0]
        hidden = stats.delayed if not self.support.delayed_before_due else stats.stale
        pending = _depth(stats, self.options) - hidden - len(self.refused)
        if pending <= 0:
            return None
        return pending, max(0, stats.in_flight - len(self.refused))

    def _move(self, jobs: Sequence[ExportedJob]) -> None:
        held_before = set(self.refused)
        fresh = [job for job in jobs if job.id not in held_before]
        for job in jobs:  # refused before, its export lease ran out: hold the new lease
            if job.id in held_before:
                self.refused[job.id] = job
        accepted = []
        for job in fresh:
            reason = self._refusal(job)
            if reason is None:
                accepted.append(job)
            else:
                self.refused[job.id] = job
                self.report.left[reason] += 1
                self.report.found += 1
        if not accepted:
            return
        # Two copies of one job at the source (a broker that dedups by marker only, killed
        # between its send and its marker): one is imported, both are committed.
        unique = list({job.id: job for job in accepted}.values())
        outcome = self.target.import_jobs(unique)
        confirmed = self.target.present_jobs([job.id for job in unique])
        missing = [job for job in unique if job.id not in confirmed]
        if missing:
            self.source.release_export(missing)
            raise JobkitError(
                f"queue {self.report.queue!r}: the target did not confirm {len(missing)} job(s) "
                f"it had just imported (e.g. {missing[0].id}); nothing of them was deleted at "
                "the source. Check the target, then run migrate again"
            )
        both = set(self.source.commit_export(accepted))
        ids = {job.id for job in accepted}
        self.report.found += len(accepted)
        copied = len(ids & outcome.copied)
        self.report.copied += copied
        self.report.skipped += len(accepted) - copied  # present already, or a second copy
        self.report.at_target += len(accepted)
        if both:
            self.report.left[BOTH_SIDES] += len(both)

    def _refusal(self, job: ExportedJob) -> str | None:
        """Why the target cannot take `job` as it is, or None."""
        caps = self.target.capabilities
        if job.dead and not caps.dead_letter:
            return f"dead letter: {caps.name} has no dead-letter queue"
        if _takes_anything(caps, self.source.capabilities):
            return None
        try:
            envelope = decode(job.body)
        except SerializationError:
            return None  # moved unchanged; a worker dead-letters it there as it would here
        try:
            caps.check(envelope, len(job.body), now_delay=job.delay)
        except UnsupportedFeature as exc:
            return f"target refuses: {' '.join(str(exc).split())}"
        return None

    def _reconcile(self) -> None:
        """Jobs still at the source that no batch saw, by why."""
        stats = self.source.stats([self.report.queue])[0]
        self.report.stale_at_source = stats.stale  # copies of moved jobs, dropped when due
        remaining = _depth(stats, self.options) - stats.stale
        self.report.remaining_at_source = remaining
        unseen = remaining - len(self.refused)
        running = min(stats.in_flight, unseen)
        hidden = min(stats.delayed, unseen - running)
        why_hidden = DUE_SOON if self.support.delayed_before_due else HIDDEN_DELAYED
        arrived = unseen - running - hidden
        for reason, count in ((RUNNING, running), (why_hidden, hidden), (ARRIVED, arrived)):
            if count > 0:
                self.report.left[reason] += count
                self.report.found += count
