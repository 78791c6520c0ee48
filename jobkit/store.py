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
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from jobkit.clock import Clock, SystemClock
from jobkit.records import AttemptError, JobRecord, JobState
from jobkit.retention import Retention


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
    """Thread-safe unless an implementation says otherwise.

    `retention` says how long the store keeps records and completed keys; a store that keeps
    them otherwise sets its own.
    """

    retention: Retention = Retention()

    @abstractmethod
    def record(self, events: Sequence[JobEvent]) -> None:
        """Durably record events (in order) before returning."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """What is known of the job, or None if no event was recorded for it."""

    @abstractmethod
    def done(self, keys: Sequence[str]) -> set[str]:
        """The subset of `keys` (from `dedup_key`) whose job has succeeded."""

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open what the first call would open (clients, connections, tables) now. A worker
        calls it before it leases anything, so that no lease is spent waiting for it. Blocks
        for the round trips it needs; idempotent; raises `BrokerUnavailable` when the store
        cannot be reached. Default: nothing (stores that open lazily and cheaply)."""

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
    # Built field by field rather than with `dataclasses.replace`, which costs several times
    # more: jobkit's worker folds every outcome into its memory store in the supervisor.
    succeeded = event.kind is EventKind.SUCCEEDED
    if record is None:
        errors: tuple[AttemptError, ...] = ()
        attempts, result, key = 0, None, None
    elif record.state is JobState.SUCCEEDED and not succeeded:
        return record  # a late duplicate does not undo success
    else:
        errors, attempts = record.errors, record.attempts
        result, key = record.result, record.idempotency_key
    if event.error is not None and event.kind in (EventKind.FAILED, EventKind.DEAD):
        errors = (*errors, AttemptError(attempt=event.attempt, error=event.error, at=event.at))
    return JobRecord(
        id=event.job_id if record is None else record.id,
        job=event.job if record is None else record.job,
        state=_STATE_OF[event.kind],
        attempts=max(attempts, event.attempt),
        errors=errors,
        result=event.result if succeeded else result,
        idempotency_key=event.key if event.key is not None else key,
        updated_at=event.at,
    )


class MemoryJobStore(JobStore):
    """Records and done keys in this process's memory. Thread-safe.

    Entries expire as `retention` says, measured on `clock` (the system clock by default): a
    record `retention.records` after its last event, a done key `retention.keys` after the job
    succeeded. Expired entries are invisible at once and deleted on the next `record`, oldest
    first, so the cost is proportional to what expired (entries are kept in update order).

    `records=False` keeps the done keys only: `get` then always returns None. For a store
    private to one process whose records nobody can read (a backend without
    `Capabilities.results`, whose `job_record` refuses): folding every outcome into a record
    cost that process's worker about 6 % of its drain rate on RabbitMQ, for nothing.
    """

    def __init__(
        self,
        *,
        retention: Retention | None = None,
        clock: Clock | None = None,
        records: bool = True,
    ) -> None:
        self.retention = retention or Retention()
        self.keeps_records = records
        self._clock: Clock = clock or SystemClock()
        self._records: OrderedDict[str, tuple[JobRecord, datetime]] = OrderedDict()
        self._done: OrderedDict[str, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, events: Sequence[JobEvent]) -> None:
        now = self._clock.now()
        with self._lock:
            self._prune(now)
            for event in events:
                if self.keeps_records:
                    old = self._records.pop(event.job_id, None)
                    record = apply_event(old[0] if old else None, event)
                    self._records[event.job_id] = (record, now)
                if event.kind is EventKind.SUCCEEDED:
                    key = dedup_key(event.job_id, event.key)
                    self._done.pop(key, None)
                    self._done[key] = now

    def get(self, job_id: str) -> JobRecord | None:
        cutoff = self._clock.now() - self.retention.records
        with self._lock:
            entry = self._records.get(job_id)
        return entry[0] if entry is not None and entry[1] >= cutoff else None

    def done(self, keys: Sequence[str]) -> set[str]:
        cutoff = self._clock.now() - self.retention.keys
        with self._lock:
            return {k for k in keys if self._done.get(k, cutoff - _TICK) >= cutoff}

    def _prune(self, now: datetime) -> None:
        _drop_older(self._records, now - self.retention.records, lambda entry: entry[1])
        _drop_older(self._done, now - self.retention.keys, lambda stamp: stamp)


_TICK = timedelta(microseconds=1)

_V = TypeVar("_V")


def _drop_older(
    entries: OrderedDict[str, _V], cutoff: datetime, stamp: Callable[[_V], datetime]
) -> None:
    """Delete the entries (kept oldest first) stamped before `cutoff`."""
    while entries:
        oldest = next(iter(entries.values()))
        if stamp(oldest) >= cutoff:
            return
        entries.popitem(last=False)
