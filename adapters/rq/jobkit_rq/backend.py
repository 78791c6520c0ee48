"""`RqBackend`: jobkit's job-level `Backend` on RQ (Redis Queue)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from jobkit import JobRecord, spi
from jobkit.spi import Capabilities, DeadLetter, QueueStats, WorkerOptions, unknown_job_problems
from jobkit_rq import _migration, _ops
from jobkit_rq._jobclass import job_class_for
from jobkit_rq._runtime import Runtime
from jobkit_rq._settings import Settings, parse_url
from jobkit_rq._worker import Supervisor

logger = logging.getLogger("jobkit.rq")


class RqBackend(spi.Backend):
    """Thread-safe for sending and for the dead-letter and stats calls."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self._closed = False
        self.migration = _migration.Migration(self.runtime)

    @property
    def capabilities(self) -> Capabilities:
        s = self.settings
        native = "" if s.hardened else ", native defaults"
        return Capabilities(
            name=f"rq+redis ({'SimpleWorker' if s.worker == 'simple' else 'Worker'}{native})",
            redelivery="heartbeat expiry in RQ's StartedJobRegistry (worker killed); "
            "at once when only the work-horse dies",
            redelivery_after=s.redelivery_after,
            # due jobs are moved every `maintenance`; RQ scores in whole seconds (rounded up)
            scheduling_precision=s.maintenance + timedelta(seconds=2),
            max_delay=None,
            priorities=1,  # RQ has no priorities within a queue (only at_front)
            results=True,
            migration=_migration.SUPPORT,
            survives_broker_restart=s.persistent,
            time_limit_margin=s.time_limit_margin,
        )

    def send(self, envelopes: Sequence[tuple[spi.Envelope, bytes]]) -> None:
        self.runtime.send([env for env, _ in envelopes])

    def job_record(self, job_id: str) -> JobRecord | None:
        return self.runtime.store.get(job_id)

    def run_worker(self, app: spi.JobSet, options: WorkerOptions) -> None:
        """Run `options.concurrency` RQ workers (see `jobkit_rq._worker`). Blocks until they
        stop: SIGTERM lets running jobs finish for `options.grace`, then stops them (they are
        retried); `burst` and `max_jobs` stop the workers when the queues are empty or that
        many jobs have ended."""
        runtime = self.runtime
        runtime.app = app
        runtime.unknown_job_timeout = options.unknown_job_timeout
        runtime.job_class = job_class_for(runtime)
        Supervisor(runtime, options).run()

    # -- migration (see `_migration`) -----------------------------------------------------------

    def export_jobs(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[spi.ExportedJob]:
        with _ops.translated(self.runtime, "export jobs"):
            return self.migration.export(
                queues, limit=limit, lease=lease, include_dead=include_dead
            )

    def import_jobs(self, jobs: Sequence[spi.ExportedJob]) -> spi.ImportOutcome:
        with _ops.translated(self.runtime, "import jobs"):
            return self.migration.import_jobs(jobs)

    def present_jobs(self, ids: Sequence[str]) -> set[str]:
        with _ops.translated(self.runtime, "look up jobs"):
            return self.migration.present(ids)

    def commit_export(self, jobs: Sequence[spi.ExportedJob]) -> list[str]:
        with _ops.translated(self.runtime, "delete exported jobs"):
            return self.migration.commit(jobs)

    def release_export(self, jobs: Sequence[spi.ExportedJob]) -> None:
        with _ops.translated(self.runtime, "give exported jobs back"):
            self.migration.release(jobs)

    # -- dead letters and stats ---------------------------------------------------------------

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return _ops.dead_letters(self.runtime, queue, limit)

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        return _ops.replay(self.runtime, queue, ids)

    def purge(self, queue: str) -> int:
        return _ops.purge(self.runtime, queue)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        stats = _ops.stats(self.runtime, queues)
        with _ops.translated(self.runtime, "read exported jobs"):
            # jobs a migrator holds count as in flight
            return [replace(s, in_flight=s.in_flight + self.migration.held(s.queue)) for s in stats]

    def check(self, app: spi.JobSet) -> list[str]:
        problems: list[str] = []
        if not self.settings.hardened:
            problems.append(
                "profile=native keeps RQ's defaults: delayed jobs and retries never run without "
                "`rq worker --with-scheduler`, and a killed worker's job is not re-run; drop "
                "profile=native"
            )
        queues = sorted({job.queue for job in app.jobs.values()}) or ["default"]
        found: Counter[str] = Counter()
        for queue in queues:
            for job in self.runtime.queue(queue).get_jobs(0, 99):
                found[str(job.func_name)] += 1
        return problems + unknown_job_problems(found, app, queues)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.runtime.close()


def backend_from_url(url: str) -> RqBackend:
    """The `jobkit.backends` entry point for ``rq+redis://``."""
    return RqBackend(parse_url(url))
