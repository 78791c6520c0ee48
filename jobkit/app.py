"""The application object: where jobs are defined and enqueued. No process-global state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, timedelta
from typing import Any, ParamSpec, TypeVar, overload

from jobkit.backend import Backend
from jobkit.config import resolve_backend_url
from jobkit.envelope import Envelope, new_job_id
from jobkit.errors import ConfigurationError, SerializationError
from jobkit.handle import JobHandle
from jobkit.job import EnqueueOptions, JobDef
from jobkit.policy import DEFAULT_POLICY, RetryPolicy
from jobkit.registry import open_backend

P = ParamSpec("P")
R = TypeVar("R")

Call = tuple[JobDef[Any, Any], tuple[Any, ...], dict[str, Any], EnqueueOptions]


class App:
    """A set of jobs and the backend they run on.

    The backend is chosen by configuration, not code: pass nothing and the URL comes from the
    ``JOBKIT_BACKEND`` variable, then ``[tool.jobkit] backend`` in ``pyproject.toml`` or
    ``backend`` in ``jobkit.toml`` (see `jobkit.config`). It is opened on first use.
    Thread-safe for enqueueing once the backend is open.
    """

    def __init__(self, name: str = "jobkit", *, backend: str | Backend | None = None) -> None:
        self.name = name
        self.jobs: dict[str, JobDef[Any, Any]] = {}
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._backend_url: str | None = backend if isinstance(backend, str) else None

    # -- definition -------------------------------------------------------------------------

    @overload
    def job(self, fn: Callable[P, R], /) -> JobDef[P, R]: ...

    @overload
    def job(
        self,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        retry: RetryPolicy = DEFAULT_POLICY,
        time_limit: timedelta | None = None,
        priority: int = 0,
        idempotency_key: Callable[..., str] | None = None,
    ) -> _Decorator: ...

    def job(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        retry: RetryPolicy = DEFAULT_POLICY,
        time_limit: timedelta | None = None,
        priority: int = 0,
        idempotency_key: Callable[..., str] | None = None,
    ) -> JobDef[Any, Any] | _Decorator:
        """Define a job: ``@app.job`` or ``@app.job(queue="mail", retry=RetryPolicy(...))``.

        The name defaults to ``module.function``; it is what travels in the envelope, so keep it
        stable across deploys. ``idempotency_key`` derives a key from the call's arguments.
        """
        decorator = _Decorator(
            self,
            dict(
                name=name,
                queue=queue,
                retry=retry,
                time_limit=time_limit,
                priority=priority,
                idempotency_key=idempotency_key,
            ),
        )
        return decorator(fn) if fn is not None else decorator

    def _define(self, fn: Callable[P, R], settings: dict[str, Any]) -> JobDef[P, R]:
        job_name = settings["name"] or f"{fn.__module__}.{fn.__qualname__}"
        if job_name in self.jobs:
            raise ConfigurationError(f"job name {job_name!r} is defined twice in {self.name}")
        jd = JobDef(self, fn, **{**settings, "name": job_name})
        self.jobs[job_name] = jd
        return jd

    # -- backend ----------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The configured backend, opened on first use."""
        if self._backend is None:
            self._backend = open_backend(resolve_backend_url(self._backend_url))
        return self._backend

    def use(self, backend: str | Backend) -> None:
        """Switch to another backend (closing the current one). For CLIs and tests."""
        self.close()
        self._backend = backend if isinstance(backend, Backend) else None
        self._backend_url = backend if isinstance(backend, str) else None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    # -- enqueue ----------------------------------------------------------------------------

    def enqueue(
        self,
        job: JobDef[Any, Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
    ) -> JobHandle:
        return self.enqueue_many([(job, args, kwargs, options)])[0]

    def enqueue_many(self, calls: Sequence[Call]) -> list[JobHandle]:
        """Validate every call, then send them all. Nothing is sent if any call is invalid."""
        backend = self.backend
        caps = backend.capabilities
        now = backend.clock.now()
        prepared: list[tuple[Envelope, bytes]] = []
        for job, args, kwargs, opts in calls:
            try:
                job.signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise SerializationError(f"job {job.name!r}: {exc}") from exc
            if opts.delay is not None and opts.not_before is not None:
                raise ConfigurationError("pass either delay or not_before, not both")
            not_before = opts.not_before
            if opts.delay is not None and opts.delay > timedelta(0):
                not_before = now + opts.delay
            if not_before is not None and not_before.tzinfo is None:
                not_before = not_before.replace(tzinfo=UTC)
            key = opts.idempotency_key
            if key is None and job.idempotency_key is not None:
                key = job.idempotency_key(*args, **kwargs)
            env = Envelope(
                id=opts.job_id or new_job_id(),
                job=job.name,
                args=tuple(args),
                kwargs=dict(kwargs),
                queue=opts.queue or job.queue,
                max_attempts=job.retry.max_attempts,
                enqueued_at=now,
                not_before=not_before,
                priority=job.priority if opts.priority is None else opts.priority,
                idempotency_key=key,
                time_limit=job.time_limit.total_seconds() if job.time_limit else None,
                headers=dict(opts.headers or {}),
            )
            body = env.encode()
            delay = not_before - now if not_before is not None else timedelta(0)
            caps.check(env, len(body), now_delay=delay)
            prepared.append((env, body))
        backend.send(prepared)
        return [JobHandle(backend, env.id, env.job) for env, _ in prepared]

    def handle(self, job_id: str) -> JobHandle:
        """A handle on a job enqueued elsewhere, by id."""
        return JobHandle(self.backend, job_id, None)


class _Decorator:
    def __init__(self, app: App, settings: dict[str, Any]) -> None:
        self._app = app
        self._settings = settings

    def __call__(self, fn: Callable[P, R]) -> JobDef[P, R]:
        return self._app._define(fn, self._settings)
