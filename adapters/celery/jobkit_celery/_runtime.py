"""What runs around every job on a Celery worker, and how jobs are sent.

`Runtime` owns the Celery app, the job store and the broker operations of one configured backend.
It sends envelopes as Celery task messages and registers every job of a jobkit `App` as a Celery
task whose body applies jobkit's semantics (attempt counting, idempotency, retry policy, dead
letters, time limits) around the job function.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import celery.exceptions as celery_exc
from celery import Celery, Task
from kombu.exceptions import KombuError, OperationalError

import jobkit
from jobkit import Envelope, EventKind, JobContext, JobEvent
from jobkit_celery._amqp_ops import AmqpOps, delay_ttl_ms
from jobkit_celery._celery_app import (
    attach_runtime,
    build_celery,
    delay_queue,
    work_queue,
)
from jobkit_celery._redis_ops import RedisOps
from jobkit_celery._settings import Settings
from jobkit_celery._store import RedisJobStore
from jobkit_celery._wire import DUE_HEADER, HEADER, envelope_of, meta_of

logger = logging.getLogger("jobkit.celery")

_PERMANENT = (jobkit.SerializationError, jobkit.UnknownJob)


class _BadArguments(jobkit.JobkitError):
    """The message's arguments do not fit the job's signature (permanent)."""


class JobTask(Task):  # type: ignore[misc]
    """Base class of the Celery tasks that run jobkit jobs (one subclass per job)."""

    jobkit_runtime: Runtime
    jobkit_job: jobkit.JobDef[Any, Any]
    typing = False  # jobkit checks arguments itself, and dead-letters a mismatch


def _run(task: JobTask, *args: Any, **kwargs: Any) -> Any:
    return task.jobkit_runtime.execute(task, args, kwargs)


class Runtime:
    def __init__(self, settings: Settings, *, app_name: str = "jobkit") -> None:
        self.settings = settings
        self.celery: Celery = build_celery(settings, app_name)
        attach_runtime(self.celery, self)
        self.store: RedisJobStore | None = (
            RedisJobStore(settings.store_url, ttl=settings.result_ttl)
            if settings.store_url
            else None
        )
        self.ops: RedisOps | AmqpOps = (
            RedisOps(settings.broker_url)
            if settings.broker == "redis"
            else AmqpOps(settings.broker_url)
        )
        self.clock: jobkit.Clock = jobkit.SystemClock()
        self.app: jobkit.App | None = None
        self.delay_ttls: set[int] = set()
        self._known: set[str] = set()

    def reconfigure(self, settings: Settings) -> None:
        """Apply changed broker settings (before the worker starts)."""
        self.settings = settings
        fresh = build_celery(settings, self.celery.main)
        self.celery.conf.update(
            broker_transport_options=fresh.conf.broker_transport_options,
            broker_heartbeat=fresh.conf.broker_heartbeat,
        )

    # -- sending ------------------------------------------------------------------------------

    def queue(self, name: str) -> Any:
        queues = self.celery.amqp.queues
        if name not in queues or name not in self._known:
            queues.select_add(work_queue(self.settings, name))
            self._known.add(name)
            if self.store is not None and self.settings.broker == "amqp":
                # RabbitMQ cannot list queues over AMQP: remember them for `jobkit status`.
                self.store.remember_queue(name)
        return queues[name]

    def known_queues(self) -> list[str]:
        names = set(self._known)
        if self.store is not None:
            names |= self.store.queues()
        return sorted(names)

    def known_delay_ttls(self) -> list[int]:
        """The delay buckets used by this process or, with a store, by any process."""
        ttls = set(self.delay_ttls)
        if self.store is not None:
            ttls |= self.store.delay_ttls()
        return sorted(ttls)

    def send(self, envelopes: Sequence[Envelope]) -> None:
        """Send each envelope as a Celery task message. Raises `BrokerUnavailable`."""
        now = self.clock.now()
        try:
            with self.celery.producer_or_acquire() as producer:
                for env in envelopes:
                    self._send_one(env, producer, now)
        except (OSError, KombuError, OperationalError) as exc:
            raise jobkit.BrokerUnavailable(
                f"cannot send to {jobkit.redact_url(self.settings.url)}: {exc}"
            ) from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("redis", "amqp")):
                raise jobkit.BrokerUnavailable(
                    f"cannot send to {jobkit.redact_url(self.settings.url)}: {exc}"
                ) from exc
            raise

    def _send_one(self, env: Envelope, producer: Any, now: Any) -> None:
        headers: dict[str, Any] = {HEADER: meta_of(env)}
        options: dict[str, Any] = {
            "task_id": env.id,
            "args": list(env.args),
            "kwargs": env.kwargs,
            "serializer": "json",
            "producer": producer,
            "headers": headers,
        }
        if env.time_limit is not None:
            options["soft_time_limit"] = env.time_limit
            options["time_limit"] = env.time_limit + self.settings.hard_limit_margin.total_seconds()
        delay = (env.not_before - now).total_seconds() if env.not_before else 0.0
        if self.settings.broker == "redis":
            options["priority"] = 9 - env.priority  # kombu on Redis: 0 runs first
            options["queue"] = self.queue(env.queue)
            if delay > 0:
                headers[DUE_HEADER] = env.not_before.timestamp()  # type: ignore[union-attr]
        else:
            options["priority"] = env.priority
            target = self.queue(env.queue)
            if delay > 0:
                ttl = delay_ttl_ms(delay)
                if ttl not in self.delay_ttls and self.store is not None:
                    # the bucket queues cannot be listed over AMQP: remember them for status
                    self.store.remember_delay(ttl)
                self.delay_ttls.add(ttl)
                target = delay_queue(env.queue, ttl)
                options["exchange"] = ""
                options["routing_key"] = target.name
                options["declare"] = [self.queue(env.queue), target]
            options["queue"] = target
        self.celery.send_task(env.job, **options)

    # -- dead letters -------------------------------------------------------------------------

    def dead_letter(self, env: Envelope, *, reason: str, deliveries: int) -> None:
        self.ops.dead_letter(
            queue=env.queue, job_id=env.id, body=env.encode(), reason=reason, deliveries=deliveries
        )

    # -- the worker side ----------------------------------------------------------------------

    def register(self, app: jobkit.App) -> None:
        """Register every job of `app` as a Celery task named after the job."""
        self.app = app
        for job in app.jobs.values():
            if job.name in self.celery.tasks:
                continue
            self.celery.task(
                name=job.name,
                bind=True,
                base=JobTask,
                jobkit_runtime=self,
                jobkit_job=job,
                acks_late=self.settings.hardened,
            )(_run)
            self.queue(job.queue)

    def _event(
        self, env: Envelope, kind: EventKind, attempt: int, *, error: str | None = None,
        result: Any = None,
    ) -> JobEvent:  # fmt: skip
        return JobEvent(
            job_id=env.id, job=env.job, kind=kind, attempt=attempt, at=self.clock.now(),
            error=error, result=result, key=env.idempotency_key,
        )  # fmt: skip

    def _record(self, *events: JobEvent) -> None:
        if self.store is not None:
            if len(events) == 1:
                self.store.finish(events[0])
            else:
                self.store.record(events)

    def execute(self, task: JobTask, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one delivery of a job with jobkit's semantics. Runs in the pool child."""
        request = task.request
        delivery_info = request.delivery_info or {}
        meta = getattr(request, HEADER, None)
        if meta is None and isinstance(request.headers, dict):
            meta = request.headers.get(HEADER)
        queue = str(delivery_info.get("routing_key") or task.jobkit_job.queue)
        try:
            env = envelope_of(
                task_id=request.id, name=task.name, args=args, kwargs=kwargs, meta=meta,
                queue=queue,
            )  # fmt: skip
        except jobkit.SerializationError as exc:
            raise celery_exc.Reject(str(exc), requeue=False) from exc
        job = task.jobkit_job
        try:
            return self._execute(env, job, bool(delivery_info.get("redelivered")))
        except (celery_exc.Retry, celery_exc.Reject, celery_exc.Ignore):
            raise
        except jobkit.BrokerUnavailable as exc:
            # Our own bookkeeping failed: leave the message to be delivered again.
            logger.error("job %s[%s]: %s; requeueing", env.job, env.id, exc)
            raise celery_exc.Reject(str(exc), requeue=True) from exc

    def _execute(self, env: Envelope, job: jobkit.JobDef[Any, Any], redelivered: bool) -> Any:
        attempt = env.attempt + 1
        if redelivered:
            attempt += self.store.redelivered(env.id, env.attempt) if self.store else 1
        if attempt > env.max_attempts:
            reason = (
                f"attempt {attempt} of at most {env.max_attempts}: the earlier attempts were "
                "lost (worker killed or hard time limit), so it is not run again"
            )
            self.dead_letter(env.with_attempt(attempt - 1), reason=reason, deliveries=attempt)
            self._record(self._event(env, EventKind.DEAD, attempt - 1, error=reason))
            raise jobkit.WorkerLost(reason)
        key = jobkit.dedup_key(env.id, env.idempotency_key)
        if self.store is not None and self.store.is_done(key):
            self._record(self._event(env, EventKind.SKIPPED, attempt))
            return None
        try:
            try:
                job.signature.bind(*env.args, **env.kwargs)
            except TypeError as exc:
                raise _BadArguments(f"arguments do not fit {job.name}: {exc}") from exc
            context = JobContext(
                id=env.id,
                job=env.job,
                queue=env.queue,
                attempt=attempt,
                max_attempts=env.max_attempts,
                idempotency_key=env.idempotency_key,
            )
            with jobkit.job_context(context):
                result = job.fn(*env.args, **env.kwargs)
            try:
                json.dumps(result, allow_nan=False)
            except (TypeError, ValueError) as exc:
                raise jobkit.SerializationError(
                    f"job {job.name!r} returned a {type(result).__name__}, which is not JSON"
                ) from exc
        except celery_exc.SoftTimeLimitExceeded as soft:
            stopped = jobkit.TimeLimitExceeded(
                f"job {job.name!r} ran past its time limit of {env.time_limit} s"
            )
            stopped.__cause__ = soft
            return self._failed(env, job, attempt, stopped)
        except Exception as exc:
            return self._failed(env, job, attempt, exc)
        self._record(self._event(env, EventKind.SUCCEEDED, attempt, result=result))
        return result

    def _failed(
        self, env: Envelope, job: jobkit.JobDef[Any, Any], attempt: int, exc: Exception
    ) -> Any:
        error = f"{type(exc).__name__}: {exc}"
        transient = (
            isinstance(exc, jobkit.TimeLimitExceeded) or job.retry.is_transient(exc)
        ) and not isinstance(exc, (*_PERMANENT, _BadArguments))
        if transient and attempt < env.max_attempts:
            delay = exc.delay if isinstance(exc, jobkit.Retry) and exc.delay else None
            if delay is None:
                delay = job.retry.backoff(attempt)
            delay = max(delay, timedelta(0))
            self.send([replace(env, attempt=attempt, not_before=self.clock.now() + delay)])
            self._record(self._event(env, EventKind.FAILED, attempt, error=error))
            raise celery_exc.Retry(error, exc=exc, when=delay.total_seconds())
        reason = error if not transient else f"{error} (attempt {attempt} of {env.max_attempts})"
        self.dead_letter(env.with_attempt(attempt), reason=reason, deliveries=attempt)
        self._record(self._event(env, EventKind.DEAD, attempt, error=error))
        raise exc

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.ops.close()
