"""The job-level interface, which every backend implements.

Frameworks that own their worker (Celery, Dramatiq, RQ) implement `Backend` directly, mapping
jobkit's semantics onto their native mechanisms. Brokers that jobkit drives itself implement the
smaller message-level `Transport` and get a `Backend` from `TransportBackend`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from jobkit.capabilities import Capabilities
from jobkit.clock import Clock, SystemClock
from jobkit.envelope import Envelope
from jobkit.errors import UnsupportedFeature
from jobkit.job import JobSet
from jobkit.records import DeadLetter, ExportedJob, ImportOutcome, JobRecord, QueueStats


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    """How a worker runs. `app_path` ("module:attribute") lets job processes import the app.

    `concurrency` job processes, each running one job at a time; `prefetch` messages leased ahead
    per process; `lease` is how long a message stays invisible before it is redelivered unless
    extended (the worker extends it every `lease / 3` while the job runs); `grace` is how long a
    SIGTERM waits for running jobs before they are stopped and released.
    `unknown_job_timeout` is how long a message this worker cannot run because it comes from
    newer code (a job name the app does not define, a newer envelope version) is released again
    and again, uncounted, for a worker that can run it, before it is dead-lettered; measured from
    when it became due (`not_before`, else `enqueued_at`).
    `max_jobs_per_child`: each job process is replaced by a fresh one after that many jobs (none:
    never), without losing or re-running a job.
    """

    app_path: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 2
    prefetch: int = 1
    lease: timedelta = timedelta(seconds=30)
    grace: timedelta = timedelta(seconds=30)
    poll: timedelta = timedelta(seconds=1)
    max_jobs: int | None = None
    max_jobs_per_child: int | None = None
    burst: bool = False
    unknown_job_timeout: timedelta = timedelta(hours=1)
    extra: dict[str, str] = field(default_factory=dict)


def unknown_job_problems(found: Mapping[str, int], app: JobSet, queues: Sequence[str]) -> list[str]:
    """`jobkit check` sentences for job names found waiting in `queues` (name -> how many
    messages) that `app` does not define."""
    return [
        f"{count} message(s) waiting in {', '.join(queues)} are for job {name!r}, which this "
        "app does not define: a worker of this app sends them back for a worker that knows "
        "the job, and dead-letters them after --unknown-job-timeout (default 1 hour)"
        for name, count in sorted(found.items())
        if name not in app.jobs
    ]


class Backend(ABC):
    """One configured backend instance. Thread-safe unless an implementation says otherwise."""

    clock: Clock = SystemClock()

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The claims of this configured instance. Cheap, no I/O."""

    @abstractmethod
    def send(self, envelopes: Sequence[tuple[Envelope, bytes]]) -> None:
        """Durably enqueue already-validated envelopes (with their encoded bodies).

        Blocks until the broker has them. Raises `BrokerUnavailable` when the broker cannot be
        reached; never drops. Called through `App.enqueue_many`, which checks capabilities first.
        """

    @abstractmethod
    def job_record(self, job_id: str) -> JobRecord | None:
        """What the backend knows of a job, or None. Raises `UnsupportedFeature` if the
        backend keeps no records (`capabilities.results` is False)."""

    @abstractmethod
    def run_worker(self, app: JobSet, options: WorkerOptions) -> None:
        """Serve jobs until SIGTERM/SIGINT (graceful, then immediate on a second signal), until
        `options.max_jobs` jobs have ended, or (with `burst`) until the queues are empty."""

    @abstractmethod
    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """The dead-letter queue of `queue`, oldest first, unchanged."""

    @abstractmethod
    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Move dead letters back to `queue` as fresh jobs (attempt count reset)."""

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete the dead letters of `queue`; returns how many."""

    @abstractmethod
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Depth per queue: ready, in flight, delayed, dead."""

    # -- migration ------------------------------------------------------------------------------
    # The protocol `jobkit migrate` drives (see `jobkit.migrate`): `export_jobs` from the source
    # (under an export lease), `import_jobs` into the target (idempotent by job id),
    # `present_jobs` on the target to confirm, then `commit_export` at the source (or
    # `release_export` for what was not confirmed). Killed at any point and run again, this
    # loses nothing: a job is deleted at the source only after the target confirmed it, and the
    # target skips what it has. `capabilities.migration` is None where these are not supported
    # (the defaults raise `UnsupportedFeature`).

    def export_jobs(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """Up to `limit` jobs of `queues` (ready, delayed, and dead letters with
        `include_dead`) that no worker holds, with their full state, leased for `lease` to
        this caller: no worker runs them and `export_jobs` does not return them again until the
        lease ends or `release_export`. Jobs a worker is running are never returned."""
        raise _no_migration(self)

    def import_jobs(self, jobs: Sequence[ExportedJob]) -> ImportOutcome:
        """Store exported jobs with their id and state (remaining delay, attempts, priority,
        dead letters as dead letters). Idempotent by job id as `capabilities.migration.dedup`
        says: a job this backend already has is skipped. Durable before returning."""
        raise _no_migration(self)

    def present_jobs(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` this backend has (waiting, dead, or imported and since run)."""
        raise _no_migration(self)

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        """Delete exported jobs for good; returns the ids whose export lease had run out and
        that a worker took meanwhile (not deleted: they are on both sides). Idempotent."""
        raise _no_migration(self)

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        """Give exported jobs back unchanged (same remaining delay and attempts)."""
        raise _no_migration(self)

    def check(self, app: JobSet) -> list[str]:
        """Problems in this configuration for `app`, one sentence each (for `jobkit check`)."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""


def _no_migration(backend: Backend) -> UnsupportedFeature:
    name = backend.capabilities.name
    return UnsupportedFeature(
        asked=f"export or import jobs on {name} (jobkit migrate)",
        supported=f"{name} does not implement migration (Capabilities.migration is None)",
        change="Migrate with a backend that supports it, or drain the queue with workers",
    )
