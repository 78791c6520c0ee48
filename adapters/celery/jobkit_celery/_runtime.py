"""What runs around every job on a Celery worker, and how jobs are sent.

`Runtime` owns the Celery app, the job store and the broker operations of one configured backend.
It sends envelopes as Celery task messages and registers every job of a jobkit `App` as a Celery
task whose body applies jobkit's semantics (attempt counting, idempotency, retry policy, dead
letters, time limits) around the job function.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import celery.exceptions as celery_exc
from celery import Celery, Task
from kombu.exceptions import KombuError, OperationalError

import jobkit
from jobkit import spi
from jobkit.middleware import Hooks, RunResult, RunStatus, context_of
from jobkit.spi import (
    Envelope,
    EventKind,
    JobEvent,
    Retrier,
    UnsupportedEnvelopeVersion,
    check_round_trip,
)
from jobkit_celery._amqp_ops import DELAY_BUCKETS, AmqpOps, delay_ttl_ms
from jobkit_celery._celery_app import (
    attach_runtime,
    build_celery,
    delay_queue,
    work_queue,
)
from jobkit_celery._redis_ops import RedisOps
from jobkit_celery._returns import forget_declarations, returns_of
from jobkit_celery._settings import Settings
from jobkit_celery._store import RedisJobStore
from jobkit_celery._waiting import wait_newer_for_a_worker
from jobkit_celery._wire import DUE_HEADER, HEADER, display_repr, envelope_of, meta_of

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")

SEND_ID = "send"  # in the jobkit header: an id of each message sent
T = TypeVar("T")

_PERMANENT = (jobkit.SerializationError, jobkit.UnknownJob)


class _BadArguments(jobkit.JobkitError):
    """The message's arguments do not fit the job's signature (permanent)."""


class JobTask(Task):  # type: ignore[misc]
    """Base class of the Celery tasks that run jobkit jobs (one subclass per job)."""

    jobkit_runtime: Runtime
    jobkit_job: jobkit.JobDef[Any, Any]
    typing = False  # jobkit checks arguments itself, and dead-letters a mismatch
    Request = "jobkit_celery._request:JobkitRequest"  # a hard time limit requeues


def _run(task: JobTask, *args: Any, **kwargs: Any) -> Any:
    return task.jobkit_runtime.execute(task, args, kwargs)


class Runtime:
    def __init__(self, settings: Settings, *, app_name: str = "jobkit") -> None:
        self.settings = settings
        self.celery: Celery = build_celery(settings, app_name)
        attach_runtime(self.celery, self)
        self.store: RedisJobStore | None = (
            RedisJobStore(settings.store_url, retention=settings.retention)
            if settings.store_url
            else None
        )
        self.ops: RedisOps | AmqpOps = (
            RedisOps(settings.broker_url)
            if settings.broker == "redis"
            else AmqpOps(settings.broker_url)
        )
        self.clock: spi.Clock = spi.SystemClock()
        self.app: spi.JobSet | None = None
        self.hooks = Hooks()  # the app's middleware, set by `register`
        self.delay_ttls: set[int] = set()
        self._known: set[str] = set()
        # Set by `run_worker` from `WorkerOptions.unknown_job_timeout`.
        self.unknown_job_timeout = timedelta(hours=1)
        self._retriers = threading.local()  # one per pool thread: see `_retry`

    def reconfigure(self, settings: Settings) -> None:
        """Apply changed broker settings (before the worker starts)."""
        self.settings = settings
        fresh = build_celery(settings, self.celery.main)
        self.celery.conf.update(
            broker_transport_options=fresh.conf.broker_transport_options,
            broker_heartbeat=fresh.conf.broker_heartbeat,
            worker_prefetch_multiplier=fresh.conf.worker_prefetch_multiplier,
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

    def known_delays(self) -> list[int]:
        """The delay-queue TTLs (ms) that may hold messages: those sent with here or by any
        process sharing the store; without a store every bucket there is (`DELAY_BUCKETS`,
        about 320 queues to ask for: no process knows which ones another one used)."""
        if self.store is None:
            return sorted(self.delay_ttls.union(DELAY_BUCKETS))
        return sorted(self.delay_ttls | self.store.delays())

    def send(self, envelopes: Sequence[Envelope]) -> None:
        """Send each envelope as a Celery task message. Raises `BrokerUnavailable`, or
        `JobkitError` when RabbitMQ has no queue for a job even after declaring it again."""
        self._publish([(env, None) for env in envelopes])

    def _publish(self, items: Sequence[tuple[Envelope, dict[str, Any] | None]]) -> None:
        """`_send_one` each (envelope, jobkit header or None); on RabbitMQ a job returned as
        unroutable is sent once more after kombu forgets its declarations (`_returns`)."""
        now = self.clock.now()
        try:
            with self.celery.producer_or_acquire() as producer:
                returns = returns_of(producer) if self.settings.broker == "amqp" else None
                for env, meta in items:
                    self._send_one(env, producer, now, meta)
                    if returns is not None and returns.take():
                        forget_declarations(producer)  # its queue was deleted: declare again
                        self._send_one(env, producer, now, meta)
                        if returns.take():
                            raise jobkit.JobkitError(
                                f"RabbitMQ had no queue for job {env.id} on {env.queue!r}, "
                                "even after declaring it again; nothing was stored: send again"
                            )
        except (OSError, KombuError, OperationalError) as exc:
            raise jobkit.BrokerUnavailable(
                f"cannot send to {spi.redact_url(self.settings.url)}: {exc}"
            ) from exc
        except Exception as exc:
            if type(exc).__module__.startswith(("redis", "amqp")):
                raise jobkit.BrokerUnavailable(
                    f"cannot send to {spi.redact_url(self.settings.url)}: {exc}"
                ) from exc
            raise

    def _send_one(
        self, env: Envelope, producer: Any, now: Any, meta: dict[str, Any] | None = None
    ) -> None:
        """`meta`: the jobkit header to send instead of `env`'s (a newer jobkit's, kept as is).
        "send" in it: this message's own id, so that starts are counted per message sent (a
        replay or retry of the same job id and attempt count starts from zero again)."""
        header = {**(meta if meta is not None else meta_of(env)), SEND_ID: spi.new_job_id()}
        headers: dict[str, Any] = {HEADER: header}
        args = list(env.args)
        options: dict[str, Any] = {
            "task_id": env.id,
            "args": args,
            "kwargs": env.kwargs,
            "argsrepr": display_repr(args),
            "kwargsrepr": display_repr(env.kwargs),
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
            options["mandatory"] = True  # an unroutable job comes back (`_returns`)
            target = self.queue(env.queue)
            if delay > 0:
                ttl = delay_ttl_ms(delay)
                if ttl not in self.delay_ttls and self.store is not None:
                    # the bucket queues cannot be listed over AMQP: remember them for status
                    self.store.remember_delay(ttl)  # once per process and delay bucket
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

    def dead_letter_unrunnable(
        self, *, queue: str, job_id: str | None, job: str | None, body: bytes, reason: str
    ) -> None:
        """Dead-letter a message that cannot run, recording it DEAD first under `job_id` (when
        one could be recovered) so that its handle reports it. Raises `BrokerUnavailable`."""
        if job_id:
            self._record(
                JobEvent(
                    job_id=job_id,
                    job=job or "(unknown)",
                    kind=EventKind.DEAD,
                    attempt=0,
                    at=self.clock.now(),
                    error=reason,
                )
            )
        self.ops.dead_letter(queue=queue, job_id=job_id, body=body, reason=reason, deliveries=1)

    def send_raw(self, env: Envelope, meta: dict[str, Any]) -> None:
        """Send `env` with `meta` as its jobkit header (a newer jobkit's, kept as is)."""
        self._publish([(env, meta)])

    # -- the worker side ----------------------------------------------------------------------

    def register(self, app: spi.JobSet) -> None:
        """Register every job of `app` as a Celery task named after the job."""
        self.app = app
        self.hooks = spi.worker_hooks(app)
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

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn` until the broker or store answers (blocks through an outage: the job's
        message stays unacked meanwhile, so nothing is lost)."""
        retrier: Retrier | None = getattr(self._retriers, "retrier", None)
        if retrier is None:
            retrier = self._retriers.retrier = Retrier()
        return retrier.call(what, fn)

    def _record(self, *events: JobEvent) -> None:
        store = self.store
        if store is not None:
            if len(events) == 1:
                self._retry("record a job event", functools.partial(store.finish, events[0]))
            else:
                self._retry("record job events", functools.partial(store.record, events))

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
        except UnsupportedEnvelopeVersion as exc:
            self._wait_newer(task, args, kwargs, meta if isinstance(meta, dict) else {}, queue, exc)
        except jobkit.SerializationError as exc:
            reason = f"undecodable: {exc}"
            logger.error("job %s[%s] on %s: %s", task.name, request.id, queue, reason)
            body = json.dumps([list(args), kwargs, {}], default=repr).encode()
            try:
                self.dead_letter_unrunnable(
                    queue=queue, job_id=request.id, job=task.name, body=body, reason=reason
                )
            except jobkit.BrokerUnavailable as down:
                raise celery_exc.Reject(str(down), requeue=True) from down
            raise celery_exc.Ignore(reason) from exc  # dead-lettered here: ack the original
        job = task.jobkit_job
        try:
            send_id = meta.get(SEND_ID) if isinstance(meta, dict) else None
            return self._execute(env, job, bool(delivery_info.get("redelivered")), send_id)
        except (celery_exc.Retry, celery_exc.Reject, celery_exc.Ignore):
            raise
        except jobkit.BrokerUnavailable as exc:
            # Our own bookkeeping failed: leave the message to be delivered again.
            logger.error("job %s[%s]: %s; requeueing", env.job, env.id, exc)
            raise celery_exc.Reject(str(exc), requeue=True) from exc

    def _wait_newer(
        self,
        task: JobTask,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        meta: dict[str, Any],
        queue: str,
        exc: UnsupportedEnvelopeVersion,
    ) -> NoReturn:
        """An envelope from a newer jobkit: sent again for a worker that reads it, uncounted;
        dead-lettered (and recorded DEAD) after `unknown_job_timeout`."""
        env = Envelope(id=task.request.id, job=task.name, args=args, kwargs=kwargs, queue=queue)
        try:
            if wait_newer_for_a_worker(self, env, meta, str(exc)):
                raise celery_exc.Ignore(str(exc))
            reason = f"no worker could run it within {self.unknown_job_timeout} "
            reason += f"(unknown-job timeout): {exc}"
            body = json.dumps([list(args), kwargs, {}], default=repr).encode()
            self.dead_letter_unrunnable(
                queue=queue, job_id=env.id, job=env.job, body=body, reason=reason
            )
        except jobkit.BrokerUnavailable as down:
            raise celery_exc.Reject(str(down), requeue=True) from down
        raise celery_exc.Ignore(reason)

    def _execute(
        self, env: Envelope, job: jobkit.JobDef[Any, Any], redelivered: bool, send_id: Any
    ) -> Any:
        """`send_id`: the ``send`` field of the message's jobkit header (None if absent)."""
        if self.store is not None:
            # Attempts are counted by starts, not deliveries: a prefetched message given back
            # at shutdown (redelivered, never started) uses no attempt.
            store = self.store
            key = spi.dedup_key(env.id, env.idempotency_key)
            message_id = str(send_id) if send_id else f"{env.id}.{env.attempt}"
            starts = self._retry("count a start", functools.partial(store.begin, key, message_id))
            if starts is None:
                self._record(self._event(env, EventKind.SKIPPED, env.attempt + 1))
                return None
            attempt = env.attempt + starts
        else:
            attempt = env.attempt + 1 + (1 if redelivered else 0)
        if attempt > env.max_attempts:
            reason = (
                f"attempt {attempt} of at most {env.max_attempts}: the earlier attempts were "
                "lost (worker killed or hard time limit), so it is not run again"
            )
            self._retry(
                f"dead-letter job {env.id}",
                functools.partial(
                    self.dead_letter, env.with_attempt(attempt - 1), reason=reason,
                    deliveries=attempt,
                ),
            )  # fmt: skip
            self._record(self._event(env, EventKind.DEAD, attempt - 1, error=reason))
            # the lost attempt's process could not say; its run time is unknown here
            self._ran(
                env, attempt - 1, time.monotonic(), RunStatus.DEAD, error=reason, reason=reason
            )
            raise jobkit.WorkerLost(reason)
        started = time.monotonic()
        try:
            try:
                job.check_arguments(env.args, env.kwargs)
            except TypeError as exc:
                raise _BadArguments(f"arguments do not fit {job.name}: {exc}") from exc
            context = context_of(env, attempt)
            with spi.job_context(context):
                self.hooks.before_run(context, env)
                result = spi.invoke_job(
                    job.name, job.fn, env.args, env.kwargs, asynchronous=job.is_async
                )
            check_round_trip(
                result, "result", what=f"job {job.name!r} ran, but its result is not JSON"
            )
        except celery_exc.SoftTimeLimitExceeded as soft:
            stopped = jobkit.TimeLimitExceeded(
                f"job {job.name!r} ran past its time limit of {env.time_limit} s"
            )
            stopped.__cause__ = soft
            return self._failed(env, job, attempt, stopped, started)
        except Exception as exc:
            return self._failed(env, job, attempt, exc, started)
        if self.store is not None:
            self._record(self._event(env, EventKind.SUCCEEDED, attempt, result=result))
        self._ran(env, attempt, started, RunStatus.SUCCEEDED)
        return result

    def _ran(
        self, env: Envelope, attempt: int, started: float, status: RunStatus, **fields: Any
    ) -> None:
        """The middleware's ``after_run`` for an attempt that began at `started` (monotonic)."""
        if self.hooks:
            duration = timedelta(seconds=time.monotonic() - started)
            result = RunResult(status=status, duration=duration, **fields)
            context = context_of(env, attempt)
            with spi.job_context(context):
                self.hooks.after_run(context, env, result)

    def _failed(
        self,
        env: Envelope,
        job: jobkit.JobDef[Any, Any],
        attempt: int,
        exc: Exception,
        started: float,
    ) -> Any:
        error = f"{type(exc).__name__}: {exc}"
        time_limit = isinstance(exc, jobkit.TimeLimitExceeded)
        transient = (
            isinstance(exc, jobkit.TimeLimitExceeded) or job.retry.is_transient(exc)
        ) and not isinstance(exc, (*_PERMANENT, _BadArguments))
        if transient and attempt < env.max_attempts:
            delay = exc.delay if isinstance(exc, jobkit.Retry) and exc.delay else None
            if delay is None:
                delay = job.retry.backoff(attempt)
            delay = max(delay, timedelta(0))
            retry = [replace(env, attempt=attempt, not_before=self.clock.now() + delay)]
            self._retry(f"send job {env.id} for a retry", functools.partial(self.send, retry))
            self._record(self._event(env, EventKind.FAILED, attempt, error=error))
            self._ran(
                env, attempt, started, RunStatus.RETRYING, error=error, delay=delay,
                time_limit=time_limit,
            )  # fmt: skip
            raise celery_exc.Retry(error, exc=exc, when=delay.total_seconds())
        reason = error if not transient else f"{error} (attempt {attempt} of {env.max_attempts})"
        self._retry(
            f"dead-letter job {env.id}",
            functools.partial(
                self.dead_letter, env.with_attempt(attempt), reason=reason, deliveries=attempt
            ),
        )
        self._record(self._event(env, EventKind.DEAD, attempt, error=error))
        self._ran(
            env, attempt, started, RunStatus.DEAD, error=error, reason=reason,
            time_limit=time_limit,
        )  # fmt: skip
        raise exc

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        self.ops.close()
