"""The running job's context, for job code that wants its id or attempt number."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class JobContext:
    id: str
    job: str
    queue: str
    attempt: int
    max_attempts: int
    idempotency_key: str | None


_current: ContextVar[JobContext | None] = ContextVar("jobkit_current_job", default=None)


def current_job() -> JobContext | None:
    """The job being run in this context, or None outside a job."""
    return _current.get()


@contextmanager
def job_context(context: JobContext) -> Iterator[JobContext]:
    """Make `context` the current job's while the block runs (for backends that run jobs in
    their own worker, such as Celery)."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)
