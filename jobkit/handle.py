"""Handles on enqueued jobs: id, state, attempts, errors, result."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobFailed, JobTimeout
from jobkit.records import AttemptError, JobRecord, JobState

if TYPE_CHECKING:
    from jobkit.backend import Backend


class JobHandle:
    """A reference to one enqueued job. Every property asks the backend afresh."""

    def __init__(self, backend: Backend, job_id: str, job: str | None) -> None:
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

    def result(self, timeout: timedelta | float | None = None) -> Any:
        """Wait for the job to end and return its result.

        Blocks for at most `timeout` (forever if None), polling the job store with a growing
        interval (10 ms to 0.5 s). Raises `JobFailed` if the job ended in the dead-letter queue,
        `JobTimeout` if the deadline passed first.
        """
        seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        deadline = None if seconds is None else time.monotonic() + seconds
        interval = 0.01
        while True:
            record = self.record()
            if record is not None and record.state is JobState.SUCCEEDED:
                return record.result
            if record is not None and record.state is JobState.DEAD:
                last = record.errors[-1].error if record.errors else "no error recorded"
                raise JobFailed(f"job {self.id} is in the dead-letter queue: {last}")
            if deadline is not None and time.monotonic() >= deadline:
                state = record.state if record else JobState.QUEUED
                raise JobTimeout(f"job {self.id} is still {state} after {seconds} s")
            pause = interval if deadline is None else min(interval, deadline - time.monotonic())
            time.sleep(max(pause, 0))
            interval = min(interval * 2, 0.5)
