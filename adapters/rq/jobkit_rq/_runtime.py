"""What runs around every job on an RQ worker, and how jobs are sent.

`Runtime` owns the Redis client, the job store and the RQ queues of one configured backend. It
sends envelopes as RQ jobs, and `execute` is the function every jobkit RQ job calls: it applies
jobkit's semantics (attempt counting, idempotency, retry policy, dead letters, time limits)
around the job function. Retries and dead letters use RQ's own machinery: `execute` sets the
job's ``retries_left`` / ``retry_intervals`` before it re-raises, so RQ's worker schedules the
retry (ScheduledJobRegistry) or moves the job to its FailedJobRegistry, where RQ tools see it.
On jobkit's workers the start count and the success record cost no round trip of their own:
`prepare` and `success_in` queue them into the transactions RQ's worker runs to file the job
started and finished (`JobkitJob` calls them); `execute` counts and records itself otherwise.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.timeouts import JobTimeoutException

import jobkit
from jobkit import JobContext, spi
from jobkit.spi import (
    Envelope,
    EventKind,
    JobEvent,
    Retrier,
    UnsupportedEnvelopeVersion,
    check_round_trip,
    salvage,
)
from jobkit_rq._batch import enqueue_unique
from jobkit_rq._client import redis_client
from jobkit_rq._settings import Settings
from jobkit_rq._store import RedisJobStore
from jobkit_rq._wire import (
    CARRIED,
    DEFER_SUCCESS,
    EXECUTION,
    META,
    PREPARED,
    REASON,
    SERIALIZER,
    SUCCESS,
    envelope_of,
    meta_of,
)

logger = logging.getLogger("jobkit.rq")
T = TypeVar("T")

UNKNOWN_JOB_RETRY = timedelta(seconds=30)
WAITING_SINCE = "jobkit_waiting_since"  # job.meta: when a job no worker here knew became due
_PERMANENT = (jobkit.SerializationError, jobkit.UnknownJob)
_BATCH = 500  # jobs per round trip of `send` (`_batch`)


class _BadArguments(jobkit.JobkitError):
    """The job's arguments do not fit the job's signature (permanent)."""


class DeadLettered(jobkit.JobkitError):
    """Raised out of a job that jobkit sends to RQ's FailedJobRegistry; the message is why."""


def due_interval(delay: timedelta) -> float:
    """RQ's retry interval for `delay`: RQ scores schedules in whole seconds, rounding down, so
    one second more never runs a job early. 0 means at once."""
    seconds = delay.total_seconds()
    return 0.0 if seconds <= 0 else seconds + 1.0


class Runtime:
    """Thread-safe for sending; `execute` runs in the process that runs the job."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client = redis_client(settings.redis_url)
        self.store = RedisJobStore(self.client, retention=settings.retention)
        self.clock: spi.Clock = spi.SystemClock()
        self.app: spi.JobSet | None = None
        self.unknown_job_timeout = timedelta(hours=1)
        self.job_class: type[Job] = Job
        self._queues: dict[str, Queue] = {}
        self._registered: set[str] = set()  # queues this process added to rq:queues
        self._retrier: Retrier | None = None
        self.ended: Callable[[], None] = lambda: None  # called after each job (max_jobs)

    def queue(self, name: str) -> Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(
                name, connection=self.client, serializer=SERIALIZER, job_class=self.job_class
            )
        return queue

    # -- sending ------------------------------------------------------------------------------

    def send(self, envelopes: Sequence[Envelope]) -> None:
        """Enqueue each envelope as an RQ job with its id, atomically refusing an id RQ already
        has (RQ's ``unique=True``): a duplicate is skipped and the first is left as it was.
        Several envelopes due now go in one round trip per `_BATCH` (`_send_many`); one, or a
        delayed one, in a call of its own. Raises `BrokerUnavailable`."""
        try:
            if len(envelopes) == 1:
                self.send_one(envelopes[0])
                return
            now = self.clock.now()
            due: list[Envelope] = []
            for env in envelopes:
                if env.not_before is not None and env.not_before > now:
                    self.send_one(env)
                else:
                    due.append(env)
            for start in range(0, len(due), _BATCH):
                self._send_many(due[start : start + _BATCH])
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(
                f"cannot send to {spi.redact_url(self.settings.url)}: {exc}"
            ) from exc

    def new_job(self, env: Envelope) -> Job:
        """The RQ job of `env` (not saved)."""
        ttl = max(1, round(self.settings.retention.records.total_seconds()))
        job = self.queue(env.queue).create_job(
            env.job,
            args=list(env.args),
            kwargs=dict(env.kwargs),
            job_id=env.id,
            meta={META: meta_of(env)},
            timeout=math.ceil(env.time_limit) if env.time_limit else -1,
            result_ttl=ttl,
            failure_ttl=ttl,
        )
        if self.settings.hardened:
            # A job whose worker (or work-horse) died is requeued at once by RQ's cleanup while
            # it has retries left; `execute` counts the attempts. One more than the attempts
            # left: a job lost in its last attempt comes back too, and `execute` dead-letters
            # it with jobkit's reason and state (RQ alone would file it failed, unrecorded).
            job.retries_left = max(env.max_attempts - env.attempt - 1, 0) + 1
            job.retry_intervals = [0]
        return job

    def _register(self, queue: Queue) -> None:
        if queue.name not in self._registered:
            # rq:queues lists the queue for RQ's tools: once per process and queue (RQ's
            # enqueue_job would add it with a MULTI of its own on every job)
            self.client.sadd(Queue.redis_queues_keys, queue.key)
            self._registered.add(queue.name)

    def _send_many(self, envelopes: Sequence[Envelope]) -> None:
        """Enqueue envelopes due now, in order, in one round trip (`_batch`), each unless RQ
        has a job with its id. Raises `redis.RedisError`."""
        items = [(self.queue(env.queue), self.new_job(env)) for env in envelopes]
        for queue, _ in items:
            self._register(queue)
        for env, sent in zip(envelopes, enqueue_unique(self.client, items), strict=True):
            if not sent:
                logger.info("job %s[%s]: an RQ job has this id; not sent again", env.job, env.id)

    def send_one(self, env: Envelope) -> bool:
        """Enqueue `env` unless RQ has a job with its id; True if it was enqueued. Raises
        `redis.RedisError`."""
        queue = self.queue(env.queue)
        job = self.new_job(env)
        self._register(queue)
        try:
            if env.not_before is not None and env.not_before > self.clock.now():
                # whole seconds, rounded up: never early
                due = datetime.fromtimestamp(math.ceil(env.not_before.timestamp()), UTC)
                queue.schedule_job(job, due, unique=True)
            else:
                # unique=True: one Lua call; RQ puts only its rq:queues SADD (done above) on
                # the pipeline, which is dropped
                with self.client.pipeline(transaction=False) as dropped:
                    queue.enqueue_job(job, pipeline=dropped, unique=True)
        except DuplicateJobError:
            logger.info("job %s[%s]: an RQ job has this id; not sent again", env.job, env.id)
            return False
        return True

    def load(self, job_id: str, queue: str) -> tuple[Job, Envelope] | None:
        """RQ job `job_id` and its envelope; None if it is gone or cannot be decoded. Raises
        `redis.RedisError`."""
        try:
            job = self.job_class.fetch(job_id, connection=self.client, serializer=SERIALIZER)
            env = envelope_of(
                job_id=job.id, name=str(job.func_name), args=job.args, kwargs=job.kwargs,
                meta=job.meta, queue=queue,
            )  # fmt: skip
        except redis.RedisError:
            raise
        except Exception:  # NoSuchJobError, DeserializationError, SerializationError
            return None
        return job, env

    # -- the worker side ----------------------------------------------------------------------

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn` until Redis answers (blocks through an outage; the job stays in RQ's
        StartedJobRegistry meanwhile, so nothing is lost)."""
        if self._retrier is None:
            self._retrier = Retrier()
        return self._retrier.call(what, fn)

    def through_outage(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn`, a piece of RQ's own bookkeeping, until Redis answers: its redis
        ``ConnectionError`` / ``TimeoutError`` are waited out as `_retry` waits out the store's
        (blocks as long as the outage; any other error is raised at once). `fn` must be safe
        to call again after it failed that way."""

        def translated() -> T:
            try:
                return fn()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                raise jobkit.BrokerUnavailable(f"cannot {what}: {exc}") from exc

        return self._retry(what, translated)

    def _record(self, event: JobEvent) -> None:
        self._retry("record a job event", functools.partial(self.store.record, [event]))

    def _event(
        self, env: Envelope, kind: EventKind, attempt: int, *, error: str | None = None,
        result: Any = None,
    ) -> JobEvent:  # fmt: skip
        return JobEvent(
            job_id=env.id, job=env.job, kind=kind, attempt=attempt, at=self.clock.now(),
            error=error, result=result, key=env.idempotency_key,
        )  # fmt: skip

    def _dead(self, job: Job, env: Envelope | None, attempt: int, reason: str) -> DeadLettered:
        """Mark `job` to end in RQ's FailedJobRegistry with `reason` (no retry left) and record
        it DEAD; the caller raises what this returns."""
        job.retries_left = None
        job.meta[REASON] = reason
        if env is not None:
            job.meta[META] = meta_of(env.with_attempt(attempt))
            self._record(self._event(env, EventKind.DEAD, attempt, error=reason))
        else:
            event = JobEvent(
                job_id=job.id, job=str(job.func_name or "(unknown)"), kind=EventKind.DEAD,
                attempt=0, at=self.clock.now(), error=reason,
            )  # fmt: skip
            self._record(event)
        self._retry("save the job's reason", job.save_meta)
        logger.error("job %s[%s]: dead-lettered: %s", job.func_name, job.id, reason)
        return DeadLettered(reason)

    def execute(self, job: Job, *args: Any, **kwargs: Any) -> Any:
        """Run one start of RQ job `job` with jobkit's semantics. Runs in the work-horse (or the
        SimpleWorker's process)."""
        try:
            return self._execute(job, args, kwargs)
        finally:
            self.ended()

    def _execute(self, job: Job, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        name = str(job.func_name)
        prepared = job.__dict__.pop(PREPARED, None)
        if prepared is not None:  # `prepare` counted the start in RQ's preparation
            env, definition, starts = prepared
        else:
            try:
                env = self._envelope(job, args, kwargs)
            except UnsupportedEnvelopeVersion as exc:
                return self._wait_for_a_worker(job, None, str(exc))
            except jobkit.SerializationError as exc:
                raise self._dead(job, None, 0, f"undecodable: {exc}") from exc
            assert self.app is not None
            definition = self.app.jobs.get(env.job)
            if definition is None:
                what = f"job {env.job!r} is not defined by this worker's app"
                return self._wait_for_a_worker(job, env, what)
            job_id, key, execution, registry = self._begin_args(job, env)
            begin = functools.partial(
                self.store.begin, job_id, key, execution=execution, registry=registry
            )
            starts = self._retry("count a start", begin)
        if starts is None:
            self._record(self._event(env, EventKind.SKIPPED, env.attempt + 1))
            return None
        if starts == 0:
            logger.warning(
                "job %s[%s] is running in another execution: this copy of it (queued twice by "
                "RQ's cleanup) is dropped without running", name, job.id,
            )  # fmt: skip
            return None
        attempt = env.attempt + starts
        if attempt > env.max_attempts:
            reason = (
                f"attempt {attempt} of at most {env.max_attempts}: the earlier attempts were "
                "lost (worker killed or hard time limit), so it is not run again"
            )
            raise self._dead(job, env, attempt - 1, reason)
        try:
            try:
                definition.check_arguments(env.args, env.kwargs)
            except TypeError as exc:
                raise _BadArguments(f"arguments do not fit {definition.name}: {exc}") from exc
            context = JobContext(
                id=env.id, job=env.job, queue=env.queue, attempt=attempt,
                max_attempts=env.max_attempts, idempotency_key=env.idempotency_key,
            )  # fmt: skip
            with spi.job_context(context):
                result = spi.invoke_job(
                    definition.name,
                    definition.fn,
                    env.args,
                    env.kwargs,
                    asynchronous=definition.is_async,
                )
            check_round_trip(
                result, "result", what=f"job {definition.name!r} ran, but its result is not JSON"
            )
        except JobTimeoutException as timeout:
            stopped = jobkit.TimeLimitExceeded(
                f"job {definition.name!r} ran past its time limit of {env.time_limit} s"
            )
            stopped.__cause__ = timeout
            self._failed(job, env, definition, attempt, stopped)
            raise stopped from timeout
        except Exception as exc:
            self._failed(job, env, definition, attempt, exc)
            raise
        succeeded = self._event(env, EventKind.SUCCEEDED, attempt, result=result)
        if getattr(job, DEFER_SUCCESS, False):
            setattr(job, SUCCESS, succeeded)  # see `success_in` and `success_committed`
        else:
            self._record(succeeded)
        return result

    # -- carried in RQ's own transactions: a round trip less for each, per job ----------------

    def _envelope(self, job: Job, args: Any, kwargs: Any) -> Envelope:
        return envelope_of(
            job_id=job.id, name=str(job.func_name), args=args, kwargs=kwargs, meta=job.meta,
            queue=str(job.origin),
        )  # fmt: skip

    def _begin_args(self, job: Job, env: Envelope) -> tuple[str, str, str, str]:
        """`RedisJobStore.begin`'s arguments for starting `job`: id, dedup key, the execution
        (set by jobkit's workers) and its StartedJobRegistry."""
        execution = str(getattr(job, EXECUTION, "") or "")
        registry = StartedJobRegistry.key_template.format(job.origin) if execution else ""
        return job.id, spi.dedup_key(env.id, env.idempotency_key), execution, registry

    def prepare(self, job: Job, pipe: Pipeline) -> None:
        """Called by `JobkitJob.prepare_for_execution` while RQ builds the transaction that
        files `job` started (in the work-horse, or the SimpleWorker's process): queue the start
        count there, and `_execute` uses its answer. Anything unusual (undecodable, a newer
        envelope, a job this app does not define, a pipeline that is not a plain transaction)
        is left to `_execute`, which counts the start itself. Never raises."""
        if self.app is None or not isinstance(pipe, Pipeline) or pipe.watching:
            return
        try:
            env = self._envelope(job, job.args, job.kwargs)
        except Exception:  # `_execute` meets it again and handles it
            return
        definition = self.app.jobs.get(env.job)
        if definition is None:
            return
        job_id, key, execution, registry = self._begin_args(job, env)
        answer = self.store.begin_in(pipe, job_id, key, execution=execution, registry=registry)
        execute = pipe.execute

        def execute_and_read(raise_on_error: bool = True) -> list[Any]:
            results = execute(raise_on_error)
            try:
                setattr(job, PREPARED, (env, definition, answer(results)))
            except (IndexError, TypeError, ValueError):  # an error reply: `_execute` counts
                pass
            return results

        pipe.execute = execute_and_read  # type: ignore[method-assign]

    def success_in(self, job: Job, pipe: Pipeline) -> None:
        """Called by `JobkitJob._handle_success` while RQ builds the transaction that files
        `job` finished: the SUCCEEDED record (and done key) `_execute` left on the job commits
        with it. RQ may build that transaction again (a WatchError); each build carries it."""
        event = getattr(job, SUCCESS, None)
        if event is not None:
            self.store.record_in(pipe, event)
            setattr(job, CARRIED, True)

    def success_committed(self, job: Job) -> None:
        """RQ's success handling of `job` has returned: record the success here if its
        transaction did not carry it (RQ saves no result when the job's ``result_ttl`` is 0)."""
        event = job.__dict__.pop(SUCCESS, None)
        carried = job.__dict__.pop(CARRIED, False)
        if event is not None and not carried:
            self._record(event)

    def _failed(
        self, job: Job, env: Envelope, definition: jobkit.JobDef[Any, Any], attempt: int,
        exc: Exception,
    ) -> None:  # fmt: skip
        """Set up what RQ does next with the failed job: a retry after the policy's backoff, or
        the FailedJobRegistry with jobkit's reason."""
        error = f"{type(exc).__name__}: {exc}"
        transient = (
            isinstance(exc, jobkit.TimeLimitExceeded) or definition.retry.is_transient(exc)
        ) and not isinstance(exc, (*_PERMANENT, _BadArguments))
        if transient and attempt < env.max_attempts:
            delay = exc.delay if isinstance(exc, jobkit.Retry) and exc.delay else None
            if delay is None:
                delay = definition.retry.backoff(attempt)
            job.retries_left = env.max_attempts - attempt
            job.retry_intervals = [due_interval(delay)]  # type: ignore[list-item]
            self._record(self._event(env, EventKind.FAILED, attempt, error=error))
            return
        reason = error if not transient else f"{error} (attempt {attempt} of {env.max_attempts})"
        self._dead(job, env, attempt, reason)

    def _wait_for_a_worker(self, job: Job, env: Envelope | None, what: str) -> None:
        """A job this worker cannot run (a job its app does not define; `env` None: an envelope
        from a newer jobkit): back to the ScheduledJobRegistry, uncounted, for a worker that
        can; dead-lettered once it has waited `unknown_job_timeout` since it became due."""
        now = self.clock.now()
        raw = job.meta.get(WAITING_SINCE)
        since = datetime.fromisoformat(raw) if isinstance(raw, str) else None
        if since is None and env is not None:
            since = env.not_before or env.enqueued_at
        if since is None:
            since = salvage(json.dumps(job.meta.get(META) or {})).since or now
        waited = now - since
        if waited >= self.unknown_job_timeout:
            reason = f"no worker could run it within {self.unknown_job_timeout} "
            raise self._dead(job, env, env.attempt if env else 0, f"{reason}: {what}")
        delay = max(min(UNKNOWN_JOB_RETRY, self.unknown_job_timeout - waited), timedelta(0))
        logger.warning("job %s[%s]: %s; offered again in %s", job.func_name, job.id, what, delay)
        job.meta[WAITING_SINCE] = since.isoformat()
        self._retry("save the job's meta", job.save_meta)
        job.retries_left = (job.retries_left or 0) + 1
        job.retry_intervals = [due_interval(delay)]  # type: ignore[list-item]
        raise jobkit.UnknownJob(what)

    def close(self) -> None:
        self.client.close()


def fresh(env: Envelope) -> Envelope:
    """`env` as a replayed job: no attempts made, due now."""
    return replace(env, attempt=0, not_before=None)
