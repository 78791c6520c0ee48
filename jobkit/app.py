"""The application object: where jobs are defined and enqueued. No process-global state."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, overload

from jobkit._enqueue import prepare
from jobkit._invoke import is_async
from jobkit.backend import Backend
from jobkit.config import resolve_backend_url
from jobkit.envelope import Envelope
from jobkit.errors import ConfigurationError
from jobkit.handle import JobHandle
from jobkit.job import AsyncJobDef, Call, EnqueueOptions, JobDef
from jobkit.middleware import Hooks, Middleware
from jobkit.policy import DEFAULT_POLICY, RetryPolicy
from jobkit.registry import open_backend

P = ParamSpec("P")
R = TypeVar("R")


class App:
    """A set of jobs and the backend they run on.

    The backend is chosen by configuration, not code: pass nothing and the URL comes from the
    ``JOBKIT_BACKEND`` variable, then ``[tool.jobkit] backend`` in ``pyproject.toml`` or
    ``backend`` in ``jobkit.toml`` (see `jobkit.config`). It is opened on first use.
    Thread-safe for enqueueing once the backend is open.

    `middleware` (`jobkit.middleware`) runs around every enqueue, every run of a job and the
    worker's start and stop, in the order given (see `add_middleware`).
    """

    def __init__(
        self,
        name: str = "jobkit",
        *,
        backend: str | Backend | None = None,
        middleware: Iterable[Middleware] = (),
    ) -> None:
        self.name = name
        self.jobs: dict[str, JobDef[Any, Any]] = {}
        self.middleware: list[Middleware] = []
        for m in middleware:
            self.add_middleware(m)
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._backend_url: str | None = backend if isinstance(backend, str) else None

    # -- definition -------------------------------------------------------------------------

    @overload
    def job(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncJobDef[P, R]: ...

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

    def _define(self, fn: Callable[..., Any], settings: dict[str, Any]) -> JobDef[Any, Any]:
        job_name = settings["name"] or f"{fn.__module__}.{fn.__qualname__}"
        if job_name in self.jobs:
            raise ConfigurationError(f"job name {job_name!r} is defined twice in {self.name}")
        kind = AsyncJobDef if is_async(fn) else JobDef
        jd: JobDef[Any, Any] = kind(self, fn, **{**settings, "name": job_name})
        self.jobs[job_name] = jd
        return jd

    def add_middleware(self, middleware: Middleware) -> None:
        """Add `middleware` after those already registered (its ``before_*`` hooks run after
        theirs, its ``after_*`` hooks before). Register at import time of the app module, so
        that the worker's processes, which import it, have it too. Not thread-safe."""
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(
                f"middleware {middleware!r} ({type(middleware).__name__}) was registered on app "
                f"{self.name!r}; middleware is an instance of a jobkit.middleware.Middleware "
                "subclass. Subclass Middleware and register an instance"
            )
        self.middleware.append(middleware)

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
        job: JobDef[Any, R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: EnqueueOptions,
    ) -> JobHandle[R]:
        return self.enqueue_many([(job, args, kwargs, options)])[0]

    def enqueue_many(self, calls: Sequence[Call]) -> list[JobHandle[Any]]:
        """Validate every call, then send them all. Nothing is sent if any call is invalid.

        Blocks until the backend has them; raises `SerializationError`, `ConfigurationError` or
        `UnsupportedFeature` for an invalid call, `BrokerUnavailable` if the broker is away.
        """
        backend = self.backend
        caps = backend.capabilities
        now = backend.clock.now()
        prepared = [
            prepare(job, args, kwargs, opts, now=now, caps=caps)
            for job, args, kwargs, opts in calls
        ]
        if not self.middleware:
            backend.send(prepared)
            return [JobHandle(backend, env.id, env.job) for env, _ in prepared]
        hooks = Hooks(self.middleware)
        prepared = [_with_headers(hooks, env, body) for env, body in prepared]
        try:
            backend.send(prepared)
        except BaseException as exc:
            hooks.after_enqueue([env for env, _ in prepared], exc)
            raise
        hooks.after_enqueue([env for env, _ in prepared], None)
        return [JobHandle(backend, env.id, env.job) for env, _ in prepared]

    def handle(self, job_id: str) -> JobHandle[Any]:
        """A handle on a job enqueued elsewhere, by id."""
        return JobHandle(self.backend, job_id, None)


def _with_headers(hooks: Hooks, env: Envelope, body: bytes) -> tuple[Envelope, bytes]:
    """`env` with the headers the ``before_enqueue`` hooks add, and its bytes."""
    changed = hooks.before_enqueue(env)
    return (env, body) if changed is env else (changed, changed.encode_exact())


class _Decorator:
    def __init__(self, app: App, settings: dict[str, Any]) -> None:
        self._app = app
        self._settings = settings

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]]) -> AsyncJobDef[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R]) -> JobDef[P, R]: ...

    def __call__(self, fn: Callable[..., Any]) -> JobDef[Any, Any]:
        return self._app._define(fn, self._settings)
