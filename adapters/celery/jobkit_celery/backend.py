"""`CeleryBackend`: jobkit's job-level `Backend` on Celery, with Redis or RabbitMQ brokers."""

from __future__ import annotations

import logging
import os
import socket
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import jobkit
from jobkit import JobRecord, spi
from jobkit.middleware import WorkerInfo
from jobkit.spi import Capabilities, DeadLetter, QueueStats, WorkerOptions, unknown_job_problems
from jobkit_celery import _migration
from jobkit_celery._amqp_export import AmqpExport
from jobkit_celery._amqp_ops import AmqpOps
from jobkit_celery._redis_export import RedisExport
from jobkit_celery._redis_ops import RedisOps
from jobkit_celery._runtime import Runtime
from jobkit_celery._settings import Settings, parse_url
from jobkit_celery._stopper import Stopper

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")

STORE_OPTION = "store=redis://HOST:PORT/DB"
"""The URL option named when keys or results are refused for want of a store."""


class CeleryBackend(spi.Backend):
    """Thread-safe for sending and for the dead-letter and stats calls."""

    def __init__(self, settings: Settings, *, app_name: str = "jobkit") -> None:
        self.settings = settings
        self.runtime = Runtime(settings, app_name=app_name)
        self._closed = False
        self._imported: set[str] = set()  # this process's imports (used without a store)
        self._export: RedisExport | None = None
        self._amqp: AmqpExport | None = None
        self._caps: tuple[Settings, object, Capabilities] | None = None

    @property
    def celery(self) -> Any:
        """The Celery app (for ``celery -A``, Flower, ``celery inspect``)."""
        return self.runtime.celery

    @property
    def capabilities(self) -> Capabilities:
        """Computed once per configuration (every enqueue reads them): `run_worker` replaces
        the settings, and the runtime's store follows them."""
        s, store = self.settings, self.runtime.store
        if self._caps is None or self._caps[0] is not s or self._caps[1] is not store:
            self._caps = (s, store, self._capabilities_for(s))
        return self._caps[2]

    def _capabilities_for(self, s: Settings) -> Capabilities:
        native = "" if s.hardened else " (native defaults)"
        # soft_time_limit raises in the job; the pool kills the child at the hard limit, which
        # is `hard_limit_margin` later (its timeout handler looks about once a second)
        margin = s.hard_limit_margin + timedelta(seconds=1)
        if s.broker == "redis":
            return Capabilities(
                name=f"celery+redis{native}",
                redelivery="visibility timeout after a worker dies; requeue when a pool child dies",
                # without visibility_timeout in the URL the worker's lease is the timeout
                redelivery_after=s.visibility_timeout if s.visibility_timeout_given else None,
                # unacked and delayed messages are moved by a sweep every restore_every s
                scheduling_precision=timedelta(seconds=2 * s.restore_every),
                max_delay=None,
                priorities=10,
                results=s.store_url is not None,
                idempotency_keys=s.store_url is not None,
                store_option=STORE_OPTION,
                migration=_migration.support(self.runtime),
                # Redis keeps the queues in memory: only AOF/RDB persistence, which the URL's
                # `persistent=yes` declares, brings them back after a restart
                survives_broker_restart=s.persistent,
                time_limit_margin=margin,
            )
        return Capabilities(
            name=f"celery+amqp{native}",
            redelivery="connection loss when a worker dies; requeue when a pool child dies",
            redelivery_after=timedelta(seconds=5),
            # delays go to TTL queues rounded up to a fixed set (`DELAY_BUCKETS`: < 1 s +
            # delay / 6, < delay / 20 above an hour); RabbitMQ expires them to the ms
            scheduling_precision=timedelta(seconds=1.5),
            delay_rounding=1 / 6,
            max_delay=timedelta(days=49),  # x-message-ttl is at most 2**32-1 ms
            priorities=10,
            results=s.store_url is not None,
            idempotency_keys=s.store_url is not None,
            store_option=STORE_OPTION,
            migration=_migration.support(self.runtime),
            survives_broker_restart=True,  # durable queues, persistent messages (delivery_mode 2)
            # without a store a job its hard limit stopped comes back redelivered, which counts
            # one attempt at most: one that runs into the hard limit every time would loop
            time_limits=s.store_url is not None,
            time_limit_margin=margin,
            # AMQP 0-9-1 counts a queue's ready messages only; what the workers hold
            # unacknowledged (running, prefetched) shows nowhere without the management API
            in_flight_visible=False,
        )

    def send(self, envelopes: Sequence[tuple[spi.Envelope, bytes]]) -> None:
        self.runtime.send([env for env, _ in envelopes])

    def job_record(self, job_id: str) -> JobRecord | None:
        if self.runtime.store is None:
            raise jobkit.UnsupportedFeature(
                asked=f"the record of job {job_id}",
                supported=f"{self.capabilities.name} keeps no job records without a store",
                change="Add store=redis://HOST:PORT/DB to the backend URL",
            )
        return self.runtime.store.get(job_id)

    # -- worker -------------------------------------------------------------------------------

    def run_worker(self, app: spi.JobSet, options: WorkerOptions) -> None:
        """Start a Celery worker in this process, serving `options.queues` with every job of
        `app` registered as a Celery task. Blocks until the worker stops.

        SIGTERM is Celery's warm shutdown (stop consuming, let running jobs finish); if jobs
        still run after `options.grace`, the worker does a cold shutdown: running jobs are
        stopped and, acked late, are delivered again. `burst` and `max_jobs` stop the worker
        once the queues are empty or that many jobs have ended.
        """
        self.settings = worker_settings(self.settings, options)
        self.runtime.reconfigure(self.settings)
        runtime = self.runtime
        runtime.unknown_job_timeout = options.unknown_job_timeout
        runtime.register(app)
        for queue in options.queues:
            runtime.queue(queue)
        if isinstance(runtime.ops, AmqpOps):
            runtime.ops.ensure_queues(list(options.queues))
        celery = runtime.celery
        hostname = options.extra.get("hostname") or f"jobkit-{os.getpid()}@{socket.gethostname()}"
        worker = celery.Worker(
            hostname=hostname,
            queues=list(options.queues),
            concurrency=options.concurrency,
            max_tasks_per_child=options.max_jobs_per_child,
            pool_cls="prefork",
            # Celery sets the root logger to this: keep the level the jobkit CLI chose (WARNING
            # unless -v), so Celery's and kombu's INFO lines stay out.
            loglevel=options.extra.get("loglevel") or logging.getLogger().getEffectiveLevel(),
            optimization="fair",
            prefetch_multiplier=self.settings.prefetch if self.settings.hardened else 4,
            # (--poll: the Redis receive wait, in the transport options; RabbitMQ pushes)
            without_gossip=True,
            without_mingle=True,
            quiet=True,
        )
        stopper = Stopper(self.stats, worker, options)
        stopper.install()
        info = WorkerInfo(
            app=app.name, queues=tuple(options.queues), concurrency=options.concurrency
        )
        runtime.hooks.worker_started(info)
        try:
            worker.start()
        finally:
            stopper.uninstall()
            runtime.hooks.worker_stopped(info)

    # -- migration (see `_migration`; export on Redis only, see `_redis_export`) ---------------

    def export_jobs(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[spi.ExportedJob]:
        out: list[spi.ExportedJob] = []
        ttls = self.runtime.known_delays() if isinstance(self.runtime.ops, AmqpOps) else []
        for queue in queues:
            left = limit - len(out)
            if isinstance(self.runtime.ops, AmqpOps):
                out += self._amqp_export().export(
                    queue, limit=left, ttls=ttls, include_dead=include_dead
                )
            else:
                out += self._redis_export().export(
                    queue, limit=left, lease=lease, include_dead=include_dead
                )
            if len(out) >= limit:
                break
        return out

    def commit_export(self, jobs: Sequence[spi.ExportedJob]) -> list[str]:
        _migration.record_departures(self.runtime, jobs)
        if isinstance(self.runtime.ops, AmqpOps):
            return self._amqp_export().commit(jobs)
        return self._redis_export().commit(jobs)

    def release_export(self, jobs: Sequence[spi.ExportedJob]) -> None:
        if isinstance(self.runtime.ops, AmqpOps):
            self._amqp_export().release(jobs)
        else:
            self._redis_export().release(jobs)

    def _redis_export(self) -> RedisExport:
        ops = self.runtime.ops
        assert isinstance(ops, RedisOps)
        if self._export is None:
            self._export = RedisExport(ops)
        return self._export

    def _amqp_export(self) -> AmqpExport:
        ops = self.runtime.ops
        assert isinstance(ops, AmqpOps)
        if self._amqp is None:
            if self.runtime.store is None:
                raise jobkit.UnsupportedFeature(
                    asked="export jobs from Celery+RabbitMQ without store=",
                    supported="its delay queues are found through the job store",
                    change="Add store=redis://HOST:PORT/DB to the backend URL",
                )
            self._amqp = AmqpExport(ops)
        return self._amqp

    def import_jobs(self, jobs: Sequence[spi.ExportedJob]) -> spi.ImportOutcome:
        outcome = _migration.import_jobs(self.runtime, jobs)
        self._imported |= outcome.copied
        return outcome

    def present_jobs(self, ids: Sequence[str]) -> set[str]:
        return _migration.present_jobs(self.runtime, ids, self._imported)

    # -- dead letters and stats ---------------------------------------------------------------

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self.runtime.ops.dead_letters(queue, limit)

    def _replay_one(self, dead: DeadLetter) -> None:
        try:
            env = spi.decode(dead.body)
        except jobkit.SerializationError:
            ops = self.runtime.ops
            if isinstance(ops, RedisOps):
                ops.push_raw(dead.queue, dead.body)
            else:
                ops.publish_raw(dead.queue, dead.body, "application/json")
            return
        self.runtime.send([replace(env, attempt=0, not_before=None)])

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        ops = self.runtime.ops
        if isinstance(ops, AmqpOps):
            return ops.replay(queue, ids, self._replay_one)
        count = 0
        for raw, dead in ops.take_dead(queue, ids):
            # claimed before it is sent (two replays at once send it once), removed only after
            # (a replay killed in between loses nothing: the claim lapses)
            if not ops.claim_dead(queue, raw):
                continue
            try:
                self._replay_one(dead)
            except BaseException:
                ops.unclaim(queue, raw)
                raise
            ops.replayed(queue, raw)
            count += 1
        return count

    def purge(self, queue: str) -> int:
        return self.runtime.ops.purge(queue)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        ops = self.runtime.ops
        if isinstance(ops, RedisOps):
            stats = ops.stats(list(queues) if queues is not None else ops.known_queues())
            export = self._redis_export()  # messages a migrator holds count as in flight
            return [replace(s, in_flight=s.in_flight + export.held(s.queue)) for s in stats]
        names = list(queues) if queues is not None else self.runtime.known_queues()
        if not names:
            ops.ping()  # no queue to read: still say whether the broker is there
        ttls = self.runtime.known_delays()
        return [
            QueueStats(
                queue=name,
                ready=ops.depth(name),
                in_flight=0,  # not visible over AMQP 0-9-1 without the management plugin
                delayed=ops.delayed(name, ttls),
                dead=ops.depth(f"jobkit.dlq.{name}"),
            )
            for name in names
        ]

    def check(self, app: spi.JobSet) -> list[str]:
        s = self.settings
        problems: list[str] = []
        if not s.hardened:
            problems.append(
                "profile=native keeps Celery's defaults: jobs are acked before they run, so a "
                "killed worker loses them; drop profile=native"
            )
        if s.store_url is None:
            problems.append(
                "no job store: results, job states and idempotency keys are off; add "
                "store=redis://HOST:PORT/DB to the backend URL"
            )
        if s.broker == "redis":
            vt = s.visibility_timeout.total_seconds()
            if s.restore_every * 3 > vt:
                problems.append(
                    f"visibility_timeout={vt:g} s is under 3 sweeps ({s.restore_every:g} s each): "
                    "a running job may be restored and run twice; raise visibility_timeout"
                )
            foreign = sorted(
                name
                for name in self.runtime.celery.tasks
                if not name.startswith("celery.") and name not in app.jobs
            )
            if foreign or not s.hardened:
                who = f"Celery tasks {', '.join(foreign)}" if foreign else "plain Celery tasks"
                problems.append(
                    f"ETA trap: {who} sent with an ETA or countdown longer than "
                    f"visibility_timeout={vt:g} s run more than once on Redis (kombu#337); "
                    "enqueue delayed work through jobkit, whose delays wait outside kombu's "
                    "unacked index"
                )
        return problems + self._waiting_unknown_jobs(app)

    def _waiting_unknown_jobs(self, app: spi.JobSet) -> list[str]:
        """Job names waiting in the app's queues that it does not define. Raises
        `BrokerUnavailable` if the broker cannot be reached."""
        queues = sorted({job.queue for job in app.jobs.values()}) or ["default"]
        found = Counter(
            name for queue in queues for name in self.runtime.ops.task_names(queue, 100)
        )
        return unknown_job_problems(found, app, queues)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._amqp is not None:
                self._amqp.close()
            self.runtime.close()


_DEFAULT_PREFETCH = WorkerOptions(app_path="").prefetch


def worker_settings(settings: Settings, options: WorkerOptions) -> Settings:
    """`settings` with the worker's options applied: `lease` is the visibility timeout unless
    the URL gives one; `prefetch` applies unless the URL gives ``prefetch=`` (the same value is
    fine); `poll` is the longest wait of a Redis receive (RabbitMQ pushes messages: no wait).

    Raises `ConfigurationError` for a `prefetch` that cannot take effect: it disagrees with the
    URL's ``prefetch=``, or ``profile=native`` keeps Celery's own prefetch.
    """
    changes: dict[str, Any] = {"poll": options.poll}
    if not settings.visibility_timeout_given:
        changes["visibility_timeout"] = options.lease
    asked = options.prefetch
    if asked != _DEFAULT_PREFETCH and asked != settings.prefetch:
        if not settings.hardened:
            raise jobkit.ConfigurationError(
                f"--prefetch {asked} cannot take effect with profile=native, which keeps "
                "Celery's default prefetch (4 messages per process); drop --prefetch, or drop "
                "profile=native from the backend URL"
            )
        if settings.prefetch_given:
            raise jobkit.ConfigurationError(
                f"--prefetch {asked} disagrees with prefetch={settings.prefetch} in the backend "
                f"URL; drop --prefetch, or set prefetch={asked} in the URL"
            )
    if not settings.prefetch_given and settings.hardened:
        changes["prefetch"] = asked
    return replace(settings, **changes)


def backend_from_url(url: str) -> CeleryBackend:
    """The `jobkit.backends` entry point for ``celery+redis://`` and ``celery+amqp://``."""
    return CeleryBackend(parse_url(url))
