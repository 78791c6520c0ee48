"""Middleware: hooks around enqueue, around each run of a job, and at worker start and stop.

Register instances on the `App` (``App(middleware=[...])`` or ``app.add_middleware(m)``); they
run in jobkit's own code, so they apply identically on every backend: in the producer around
`App.enqueue_many`, in the process that runs the job (a jobkit job process, or Celery's pool
child) around each attempt, and in the worker's main process at start and stop.

Subclass `Middleware` and override what you need (every hook does nothing by default):

=====================  ==========================================================================
hook                   when, and where
=====================  ==========================================================================
``before_enqueue``     before an envelope is sent; returns headers to add to it (or None). Its
                       producer process.
``after_enqueue``      after the send (``error`` is the exception if it failed). Producer.
``before_run``         just before the job function is called. The process that runs the job.
``after_run``          after each attempt with its `RunResult`: succeeded, retrying (with the
                       delay), dead (with the reason), or interrupted (released at shutdown);
                       ``time_limit`` says the attempt was stopped by its time limit. The
                       process that ran the job; where that process was killed (a hard time
                       limit, a crash), jobkit's worker main process calls it instead.
``worker_started``     the worker is about to serve. The worker's main process.
``worker_stopped``     the worker has stopped serving. The worker's main process.
=====================  ==========================================================================

Order: the ``before_*`` hooks and ``worker_started`` run in registration order, the ``after_*``
hooks and ``worker_stopped`` in reverse (like nested ``with`` blocks). An exception in a hook is
logged (logger ``jobkit.middleware``) and the next hook runs; it never fails the enqueue nor
changes a job's outcome, so no job is lost to a broken hook. Hooks must be thread-safe when the
producer enqueues from several threads; they should be quick (they run on the hot path).
Headers returned by ``before_enqueue`` must map str to str (else they are ignored, and logged).

Middleware objects are not sent anywhere: a jobkit job process and Celery's workers load the
app (or fork from it), so the middleware the app module registers is present there too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum

from jobkit.envelope import Envelope
from jobkit.worker.context import JobContext

log = logging.getLogger(__name__)


class RunStatus(StrEnum):
    """What became of one attempt."""

    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # it failed and runs again after `RunResult.delay`
    DEAD = "dead"  # it failed for good: dead-lettered with `RunResult.reason`
    INTERRUPTED = "interrupted"  # the worker stopped: released to run again, no attempt used


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """The outcome of one attempt, as `Middleware.after_run` sees it."""

    status: RunStatus
    duration: timedelta
    error: str | None = None  # the failure ("ValueError: ..."), None on success
    delay: timedelta | None = None  # RETRYING: how long until the next attempt
    reason: str | None = None  # DEAD: the dead-letter reason
    time_limit: bool = False  # the attempt was stopped by its time limit


@dataclass(frozen=True, kw_only=True)
class WorkerInfo:
    """The worker `worker_started` / `worker_stopped` are called for."""

    app: str
    queues: tuple[str, ...]
    concurrency: int


class Middleware:
    """Base class of middleware: every hook does nothing. See the module docstring."""

    def before_enqueue(self, envelope: Envelope) -> Mapping[str, str] | None:
        return None

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        return None

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        return None

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        return None

    def worker_started(self, worker: WorkerInfo) -> None:
        return None

    def worker_stopped(self, worker: WorkerInfo) -> None:
        return None


class Hooks:
    """Calls a sequence of middleware in the defined order, logging (never raising) what a hook
    raises. Immutable; thread-safe as far as the middleware is."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware: tuple[Middleware, ...] = tuple(middleware)

    def __bool__(self) -> bool:
        return bool(self.middleware)

    def _guard(self, m: Middleware, hook: str, what: str) -> None:
        log.exception("middleware %s.%s failed for %s", type(m).__name__, hook, what)

    def before_enqueue(self, envelope: Envelope) -> Envelope:
        """`envelope` with the headers the hooks add (later hooks win on a clash)."""
        added: dict[str, str] = {}
        for m in self.middleware:
            try:
                headers = m.before_enqueue(envelope)
            except Exception:
                self._guard(m, "before_enqueue", f"job {envelope.id}")
                continue
            if headers is None:
                continue
            if not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
            ):
                log.error(
                    "middleware %s.before_enqueue returned %r for job %s: headers map str to "
                    "str; ignored",
                    type(m).__name__,
                    headers,
                    envelope.id,
                )
                continue
            added.update(headers)
        if not added:
            return envelope
        return replace(envelope, headers={**envelope.headers, **added})

    def after_enqueue(self, envelopes: Sequence[Envelope], error: BaseException | None) -> None:
        for m in reversed(self.middleware):
            for env in envelopes:
                try:
                    m.after_enqueue(env, error)
                except Exception:
                    self._guard(m, "after_enqueue", f"job {env.id}")

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        for m in self.middleware:
            try:
                m.before_run(job, envelope)
            except Exception:
                self._guard(m, "before_run", f"job {job.id} attempt {job.attempt}")

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        for m in reversed(self.middleware):
            try:
                m.after_run(job, envelope, result)
            except Exception:
                self._guard(m, "after_run", f"job {job.id} attempt {job.attempt}")

    def worker_started(self, worker: WorkerInfo) -> None:
        for m in self.middleware:
            try:
                m.worker_started(worker)
            except Exception:
                self._guard(m, "worker_started", f"app {worker.app}")

    def worker_stopped(self, worker: WorkerInfo) -> None:
        for m in reversed(self.middleware):
            try:
                m.worker_stopped(worker)
            except Exception:
                self._guard(m, "worker_stopped", f"app {worker.app}")


def hooks_of(app: object) -> Hooks:
    """The hooks of an `App` (or of any `JobSet` with a ``middleware`` sequence); none for a
    job set without one. For backends that run jobs in their own worker (Celery)."""
    middleware = getattr(app, "middleware", None)
    if isinstance(middleware, Sequence):
        return Hooks(m for m in middleware if isinstance(m, Middleware))
    return Hooks()


def context_of(envelope: Envelope, attempt: int) -> JobContext:
    """The `JobContext` of running `envelope`'s attempt number `attempt` (1-based)."""
    return JobContext(
        id=envelope.id,
        job=envelope.job,
        queue=envelope.queue,
        attempt=attempt,
        max_attempts=envelope.max_attempts,
        idempotency_key=envelope.idempotency_key,
    )
