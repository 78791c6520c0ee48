"""Handles on enqueued jobs: id, state, attempts, errors, result (blocking or awaitable)."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Generic, Protocol, TypeGuard, TypeVar, cast

from jobkit.errors import JobFailed, JobTimeout
from jobkit.records import AttemptError, JobRecord, JobState

R = TypeVar("R")

_FIRST_POLL = 0.01
_MAX_POLL = 0.5


class RecordSource(Protocol):
    """Where a handle reads its job's record: every `Backend` is one."""

    def job_record(self, job_id: str) -> JobRecord | None: ...


class JobHandle(Generic[R]):
    """A reference to one enqueued job; `R` is what the job returns. Every property asks the
    backend afresh (blocking I/O); the ``a``-prefixed methods do that I/O in a thread."""

    def __init__(self, backend: RecordSource, job_id: str, job: str | None) -> None:
        self.id = job_id
        self.job = job
        self._backend = backend

    def __repr__(self) -> str:
        return f"<JobHandle {self.job or '?'} {self.id}>"

    def record(self) -> JobRecord | None:
        return self._backend.job_record(self.id)

    @property
    def state(self) -> JobState:
        record = self.record()
        return record.state if record else JobState.QUEUED

    @property
    def attempts(self) -> int:
        record = self.record()
        return record.attempts if record else 0

    @property
    def errors(self) -> tuple[AttemptError, ...]:
        record = self.record()
        return record.errors if record else ()

    def result(self, timeout: timedelta | float | None = None) -> R:
        """Wait for the job to end and return its result.

        Blocks for at most `timeout` (forever if None), polling the job store with a growing
        interval (10 ms to 0.5 s). Raises `JobFailed` if the job ended in the dead-letter queue,
        `JobTimeout` if the deadline passed first.
        """
        wait = _Wait(self.id, timeout)
        while True:
            record = self.record()
            if _succeeded(record, self.id):
                return cast(R, record.result)
            time.sleep(wait.next_pause(record))

    async def aresult(self, timeout: timedelta | float | None = None) -> R:
        """`result` for asyncio code: the same outcome, without blocking the event loop (each
        store read runs in a thread, the pauses are `asyncio.sleep`). Cancellable."""
        wait = _Wait(self.id, timeout)
        while True:
            record = await asyncio.to_thread(self.record)
            if _succeeded(record, self.id):
                return cast(R, record.result)
            await asyncio.sleep(wait.next_pause(record))


def _succeeded(record: JobRecord | None, job_id: str) -> TypeGuard[JobRecord]:
    """True if the job succeeded; raises `JobFailed` if it is dead; False while it may run."""
    if record is None:
        return False
    if record.state is JobState.SUCCEEDED:
        return True
    if record.state is JobState.DEAD:
        last = record.errors[-1].error if record.errors else "no error recorded"
        raise JobFailed(f"job {job_id} is in the dead-letter queue: {last}")
    return False


class _Wait:
    """The deadline and the growing poll interval of one `result` call."""

    def __init__(self, job_id: str, timeout: timedelta | float | None) -> None:
        self.job_id = job_id
        self.seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.deadline = None if self.seconds is None else time.monotonic() + self.seconds
        self.interval = _FIRST_POLL

    def next_pause(self, record: JobRecord | None) -> float:
        """Seconds to sleep before the next read; raises `JobTimeout` past the deadline."""
        pause = self.interval
        self.interval = min(self.interval * 2, _MAX_POLL)
        if self.deadline is None:
            return pause
        left = self.deadline - time.monotonic()
        if left <= 0:
            state = record.state if record else JobState.QUEUED
            raise JobTimeout(f"job {self.job_id} is still {state} after {self.seconds} s")
        return min(pause, left)
