"""The job store: outcomes of attempts, results, and completed idempotency keys.

The worker records events here and asks it which idempotency keys are done, so that a duplicate
delivery of a completed job is acked without running it again.

What is guaranteed: once a `SUCCEEDED` event for a key is recorded, later deliveries carrying that
key are acked without running. What is not: if a worker dies after the job's side effect happened
but before its `SUCCEEDED` event was recorded, the job runs again. Make side effects idempotent
(or record them in the same transaction as your own data) to close that window.

The worker also remembers the keys that succeeded in it (and holds back a second delivery of a
key that is running in it), so two deliveries of one key that reach the same worker together run
once even before the store knows. To test a store's own deduplication, deliver the duplicate to
a fresh worker.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from jobkit.records import AttemptError, JobRecord, JobState


class EventKind(StrEnum):
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # an attempt failed and another is scheduled
    DEAD = "dead"  # moved to the dead-letter queue
    SKIPPED = "skipped"  # a duplicate of a completed key, acked without running


@dataclass(frozen=True, kw_only=True)
class JobEvent:
    job_id: str
    job: str
    kind: EventKind
    attempt: int
    at: datetime
    error: str | None = None
    result: Any = None
    key: str | None = None


def dedup_key(job_id: str, idempotency_key: str | None) -> str:
    """The key a job is deduplicated on: its idempotency key, else its id."""
    return f"k:{idempotency_key}" if idempotency_key is not None else f"id:{job_id}"


class JobStore(ABC):
    """Thread-safe unless an implementation says otherwise."""

    @abstractmethod
    def record(self, events: Sequence[JobEvent]) -> None:
        """Durably record events (in order) before returning."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """What is known of the job, or None if no event was recorded for it."""

    @abstractmethod
    def done(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` (from `dedup_key`) whose job has succeeded."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Idempotent."""


_STATE_OF = {
    EventKind.STARTED: JobState.RUNNING,
    EventKind.SUCCEEDED: JobState.SUCCEEDED,
    EventKind.FAILED: JobState.SCHEDULED,
    EventKind.DEAD: JobState.DEAD,
    EventKind.SKIPPED: JobState.SUCCEEDED,
}


def apply_event(record: JobRecord | None, event: JobEvent) -> JobRecord:
    """Fold one event into a job record (shared by every store implementation)."""
    if record is None:
        record = JobRecord(id=event.job_id, job=event.job, state=JobState.QUEUED, attempts=0)
    if record.state is JobState.SUCCEEDED and event.kind is not EventKind.SUCCEEDED:
        return record  # a late duplicate does not undo success
    errors = record.errors
    if event.error is not None and event.kind in (EventKind.FAILED, EventKind.DEAD):
        errors = (*errors, AttemptError(attempt=event.attempt, error=event.error, at=event.at))
    return replace(
        record,
        state=_STATE_OF[event.kind],
        attempts=max(record.attempts, event.attempt),
        errors=errors,
        result=event.result if event.kind is EventKind.SUCCEEDED else record.result,
        idempotency_key=event.key if event.key is not None else record.idempotency_key,
        updated_at=event.at,
    )


class MemoryJobStore(JobStore):
    def __init__(self) -> None:
        self._records: dict[str, JobRecord] = {}
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def record(self, events: Sequence[JobEvent]) -> None:
        with self._lock:
            for event in events:
                self._records[event.job_id] = apply_event(self._records.get(event.job_id), event)
                if event.kind is EventKind.SUCCEEDED:
                    self._done.add(dedup_key(event.job_id, event.key))

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._records.get(job_id)

    def done(self, keys: Sequence[str]) -> set[str]:
        with self._lock:
            return {k for k in keys if k in self._done}
