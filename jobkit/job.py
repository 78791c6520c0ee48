"""Job definitions: what the `App.job` decorator makes, and how a call is enqueued."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from jobkit.errors import ConfigurationError
from jobkit.policy import RetryPolicy

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.handle import JobHandle

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class EnqueueOptions:
    """Per-call options. `delay` and `not_before` are exclusive; `None` keeps the job default."""

    delay: timedelta | None = None
    not_before: datetime | None = None
    priority: int | None = None
    idempotency_key: str | None = None
    queue: str | None = None
    job_id: str | None = None
    headers: dict[str, str] | None = None


class JobDef(Generic[P, R]):
    """A job: a function plus its name, queue, retry policy, time limit and default priority.

    Call it directly to run the function in-process (as in a unit test); `enqueue` it to run it
    on a worker.
    """

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str,
        queue: str,
        retry: RetryPolicy,
        time_limit: timedelta | None,
        priority: int,
        idempotency_key: Callable[..., str] | None,
    ) -> None:
        if time_limit is not None and time_limit <= timedelta(0):
            raise ConfigurationError(f"job {name!r}: time_limit must be positive")
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retry = retry
        self.time_limit = time_limit
        self.priority = priority
        self.idempotency_key = idempotency_key
        self.signature = inspect.signature(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<JobDef {self.name} queue={self.queue}>"

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        """Enqueue one call with the job's defaults. Returns once the backend has it."""
        return self.app.enqueue(self, args, kwargs, EnqueueOptions())

    def options(self, **options: Any) -> BoundJob[P, R]:
        """Per-call options: ``job.options(delay=timedelta(minutes=5), priority=9).enqueue(x)``.

        Takes the fields of `EnqueueOptions`.
        """
        return BoundJob(self, EnqueueOptions(**options))

    def enqueue_many(self, calls: Iterable[tuple[Any, ...]]) -> list[JobHandle]:
        """Enqueue one job per argument tuple in as few broker round trips as the backend can."""
        return self.app.enqueue_many([(self, tuple(args), {}, EnqueueOptions()) for args in calls])


class BoundJob(Generic[P, R]):
    def __init__(self, job: JobDef[P, R], options: EnqueueOptions) -> None:
        self.job = job
        self.opts = options

    def options(self, **options: Any) -> BoundJob[P, R]:
        return BoundJob(self.job, replace(self.opts, **options))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle:
        return self.job.app.enqueue(self.job, args, kwargs, self.opts)
