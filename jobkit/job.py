"""Job definitions: what the `App.job` decorator makes, and how a call is enqueued."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypedDict, TypeVar, Unpack

from jobkit._invoke import is_async
from jobkit.errors import ConfigurationError
from jobkit.handle import JobHandle
from jobkit.policy import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, kw_only=True)
class EnqueueOptions:
    """Per-call options. `delay` and `not_before` are exclusive; `None` keeps the job default.

    Checked at enqueue: `delay` a timedelta >= 0; `not_before` a timezone-aware datetime;
    `priority` an int in the backend's range; `idempotency_key`, `job_id` and `queue` non-empty
    str of at most 200 characters; `headers` str to str.
    """

    delay: timedelta | None = None
    not_before: datetime | None = None
    priority: int | None = None
    idempotency_key: str | None = None
    queue: str | None = None
    job_id: str | None = None
    headers: Mapping[str, str] | None = None


_NO_OPTIONS = EnqueueOptions()  # frozen: one instance serves every plain `enqueue`


class Options(TypedDict, total=False):
    """The keywords of `JobDef.options`: the fields of `EnqueueOptions`."""

    delay: timedelta
    not_before: datetime
    priority: int
    idempotency_key: str
    queue: str
    job_id: str
    headers: Mapping[str, str]


Call = tuple["JobDef[Any, Any]", tuple[Any, ...], dict[str, Any], EnqueueOptions]
"""One call to enqueue: the job, its positional and keyword arguments, its options."""


class Enqueuer(Protocol):
    """What a job enqueues through (an `App`)."""

    def enqueue_many(self, calls: Sequence[Call]) -> list[JobHandle[Any]]: ...


class JobSet(Protocol):
    """What backends and workers need of an application (an `App`): its name and its jobs."""

    @property
    def name(self) -> str: ...

    @property
    def jobs(self) -> Mapping[str, JobDef[Any, Any]]: ...


class JobDef(Generic[P, R]):
    """A job: a function plus its name, queue, retry policy, time limit and default priority.

    Call it directly to run the function in-process (as in a unit test); `enqueue` it to run it
    on a worker. `R` is what the job returns (for an ``async def`` job, what it returns when
    awaited). Enqueueing is thread-safe and blocks until the backend has the job; the
    ``a``-prefixed methods do the same from asyncio code without blocking the event loop.
    """

    def __init__(
        self,
        app: Enqueuer,
        fn: Callable[P, Any],
        *,
        name: str,
        queue: str,
        retry: RetryPolicy,
        time_limit: timedelta | None,
        priority: int,
        idempotency_key: Callable[..., str] | None,
    ) -> None:
        _check_definition(name, queue, time_limit, priority)
        self.app = app
        self.fn = fn
        self.name = name
        self.queue = queue
        self.retry = retry
        self.time_limit = time_limit
        self.priority = priority
        self.idempotency_key = idempotency_key
        self.signature = inspect.signature(fn)
        self.is_async = is_async(fn)
        self._fitting: set[tuple[int, frozenset[str]]] = set()

    def check_arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raise `TypeError` (``signature.bind``'s message) unless `args` and `kwargs` fit the
        job function's signature. Thread-safe.

        Whether a call binds depends only on how many positional arguments it has and which
        keyword names, so a shape that bound once is remembered and not bound again: this runs
        for every enqueue and every run.
        """
        shape = (len(args), frozenset(kwargs))
        if shape in self._fitting:
            return
        self.signature.bind(*args, **kwargs)
        if len(self._fitting) < _SHAPES_KEPT:
            self._fitting.add(shape)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.fn(*args, **kwargs)
        return result

    def __repr__(self) -> str:
        return f"<JobDef {self.name} queue={self.queue}>"

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one call with the job's defaults. Returns once the backend has it."""
        return self.app.enqueue_many([(self, args, kwargs, _NO_OPTIONS)])[0]

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """`enqueue` from asyncio code: the broker I/O runs in a thread."""
        return await asyncio.to_thread(self.enqueue, *args, **kwargs)

    def options(self, **options: Unpack[Options]) -> BoundJob[P, R]:
        """Per-call options: ``job.options(delay=timedelta(minutes=5), priority=9).enqueue(x)``.

        The fields of `EnqueueOptions`, typed (mypy refuses a misspelled one).
        """
        return BoundJob(self, EnqueueOptions(**options))

    def enqueue_many(self, calls: Iterable[tuple[Any, ...]]) -> list[JobHandle[R]]:
        """Enqueue one job per argument tuple in as few broker round trips as the backend can.
        Nothing is sent if any call is invalid."""
        return self.app.enqueue_many([(self, tuple(args), {}, _NO_OPTIONS) for args in calls])

    async def aenqueue_many(self, calls: Iterable[tuple[Any, ...]]) -> list[JobHandle[R]]:
        """`enqueue_many` from asyncio code: the broker I/O runs in a thread."""
        return await asyncio.to_thread(self.enqueue_many, list(calls))


_SHAPES_KEPT = 64
"""Call shapes remembered per job as fitting (`JobDef.check_arguments`)."""


class AsyncJobDef(JobDef[P, R]):
    """An ``async def`` job: calling it directly returns the coroutine (await it in a test);
    a worker runs it to completion on an event loop in the job process."""

    def __call__(  # type: ignore[override]
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        coroutine: Coroutine[Any, Any, R] = self.fn(*args, **kwargs)
        return coroutine


class BoundJob(Generic[P, R]):
    """A job with per-call options, from `JobDef.options`."""

    def __init__(self, job: JobDef[P, R], options: EnqueueOptions) -> None:
        self.job = job
        self.opts = options

    def options(self, **options: Unpack[Options]) -> BoundJob[P, R]:
        """More options on top of these."""
        return BoundJob(self.job, replace(self.opts, **options))

    def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one call with these options. Returns once the backend has it."""
        return self.job.app.enqueue_many([(self.job, args, kwargs, self.opts)])[0]

    async def aenqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """`enqueue` from asyncio code: the broker I/O runs in a thread."""
        return await asyncio.to_thread(self.enqueue, *args, **kwargs)


def _check_definition(name: str, queue: object, time_limit: object, priority: object) -> None:
    if not isinstance(queue, str) or not queue:
        raise ConfigurationError(f"job {name!r}: queue {queue!r} must be a non-empty str")
    if time_limit is not None and (
        not isinstance(time_limit, timedelta) or time_limit <= timedelta(0)
    ):
        raise ConfigurationError(
            f"job {name!r}: time_limit {time_limit!r} is not allowed; a time limit is a positive "
            "timedelta. Pass for example time_limit=timedelta(minutes=5), or None for no limit"
        )
    if type(priority) is not int:
        raise ConfigurationError(
            f"job {name!r}: priority {priority!r} ({type(priority).__name__}) is not allowed; "
            "a priority is an int (0..9 on most backends). Pass an int"
        )
