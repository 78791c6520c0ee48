"""Records that cross the interfaces: frozen, keyword-only, comparable."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Message:
    """A message to send. `body` is the encoded envelope (or, in tests, anything). `job` is
    the envelope's job name where the sender has it at hand (enqueue does), so a transport that
    labels messages by job (Dramatiq's actor name) need not decode `body`; None otherwise."""

    queue: str
    body: bytes
    id: str
    delay: timedelta = timedelta(0)
    priority: int = 0
    dedup_key: str | None = None
    job: str | None = None


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One delivery of a message to one consumer, under a lease.

    `deliveries` counts how often the broker has handed this message out, this time included
    (SQS ApproximateReceiveCount, RabbitMQ x-delivery-count + 1). `receipt` identifies this
    lease: after the lease has expired and the message was delivered again, the old receipt is
    stale and acting on it must not affect the new delivery.
    """

    queue: str
    id: str
    body: bytes
    deliveries: int
    receipt: str
    leased_until: datetime | None = None
    native: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """A message in a dead-letter queue, with why and when it got there."""

    queue: str
    id: str
    body: bytes
    reason: str
    dead_at: datetime | None
    deliveries: int = 0


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    """A queue's counts. `stale`: of `delayed`, up to this many may be copies of jobs that
    were migrated away, which the broker still counts until they fall due and are dropped
    (SQS, after a migration into it was killed between a send and its markers; see
    `jobkit_sqs.migration`). They are not jobs; 0 where a backend knows its jobs exactly."""

    queue: str
    ready: int
    in_flight: int
    delayed: int
    dead: int
    stale: int = 0


class JobState(StrEnum):
    """Where a job is, in the spirit of RQ's explicit states."""

    QUEUED = "queued"  # waiting for a worker
    SCHEDULED = "scheduled"  # delayed, or waiting out a retry backoff
    RUNNING = "running"  # an attempt has started and not ended
    SUCCEEDED = "succeeded"  # done; the result (if any) is stored
    DEAD = "dead"  # in the dead-letter queue
    UNKNOWN = "unknown"  # the backend keeps no record of this id


@dataclass(frozen=True, kw_only=True)
class AttemptError:
    attempt: int
    error: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class JobRecord:
    """What the job store knows of one job."""

    id: str
    job: str
    state: JobState
    attempts: int
    errors: tuple[AttemptError, ...] = ()
    result: Any = None
    idempotency_key: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class ExportedJob:
    """One job handed out by `export` for migration, with its full state, under an export lease.

    `body` is the envelope with the attempts already used folded into its `attempt` (so the
    target's first delivery computes the same attempt number the source's next one would).
    `delay` is what is left of its delay (zero when due); `dead_reason` is set for a dead letter,
    which stays one on the target. `receipt` and `native` identify the export lease at the
    source (for `commit_export` / `release_export`); they mean nothing to another backend.
    """

    queue: str
    id: str
    body: bytes
    delay: timedelta = timedelta(0)
    priority: int = 0
    dedup_key: str | None = None
    dead_reason: str | None = None
    receipt: str = ""
    native: Any = field(default=None, compare=False, repr=False)

    @property
    def dead(self) -> bool:
        return self.dead_reason is not None


@dataclass(frozen=True, kw_only=True)
class ImportOutcome:
    """What `import_jobs` did: ids sent to the target, and ids it already had (not sent)."""

    copied: frozenset[str]
    skipped: frozenset[str]
