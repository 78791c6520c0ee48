"""The message-level interface: leased delivery, for brokers jobkit drives itself.

Implement this for a broker where jobkit runs its own worker loop (memory, SQLite, SQS,
RabbitMQ). The generic `TransportBackend` turns any `Transport` into a full job `Backend`: retries,
dead letters, time limits, idempotency and graceful shutdown all come from jobkit then.

The model is SQS's: `receive` hands out a message under a lease; until the lease ends the message
is invisible to other consumers; `ack` removes it, `release` makes it visible again (after a delay),
`dead_letter` moves it to the queue's dead-letter queue, `extend` lengthens the lease. A message
whose lease runs out without an ack is delivered again: that is the at-least-once guarantee.

Unless a method says otherwise, an instance is used from one thread at a time; the worker gives
each thread its own instance (`clone`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta

from jobkit.capabilities import Capabilities
from jobkit.errors import UnsupportedFeature
from jobkit.records import DeadLetter, Delivery, ExportedJob, Message, QueueStats

DEFAULT_PEEK_LIMIT = 100


class Transport(ABC):
    receive_batch: int = 10
    """While jobs wait in a worker's buffer, the worker calls `receive` again only once this
    many have left it (or its job processes could run out of work): where each call is a round
    trip to the broker (SQS, Redis, SQLite) one call per job costs more than a short job. A
    transport whose `receive` takes deliveries the broker has already pushed to this process
    (AMQP consumers) sets 1, so that the buffer is topped up as soon as there is room: with a
    small buffer, waiting for ten let the job processes run dry between refills."""

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The claims of this configured instance. Cheap, no I/O."""

    @abstractmethod
    def send(self, messages: Sequence[Message]) -> None:
        """Durably store every message before returning; all or nothing where the broker can.

        Raises `BrokerUnavailable` if the broker cannot be reached: a message is never dropped
        silently. A message with a `delay` is not delivered before the delay has passed.
        Not idempotent: sending the same message twice delivers it twice, unless the broker
        dedups on `dedup_key` (see `Capabilities.dedup_window`).
        """

    @abstractmethod
    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Lease up to `max_messages` due messages from `queues`.

        Blocks for at most `wait` when nothing is due, then returns an empty list. Higher
        priority first where the broker supports priorities, then oldest first.
        """

    @abstractmethod
    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove the messages for good. Idempotent. A stale receipt (the lease ran out and the
        message was delivered again) must not remove the newer delivery where the broker can
        tell them apart."""

    @abstractmethod
    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """End the lease early: the message becomes deliverable again after `delay`.

        The next delivery counts one more in `Delivery.deliveries`. Idempotent.
        """

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """Like `release`, but this delivery is not counted: the next delivery computes the same
        attempt number (`envelope.attempt + Delivery.deliveries`) as this one.

        For a message the worker leased but never started (buffered at shutdown, or a job this
        worker does not know). Never loses the message: at worst (a crash in between) it is
        delivered twice, once counted. Not idempotent in the default implementation.

        The default sends a copy whose envelope `attempt` is `attempt + deliveries - 1` (so that
        its first delivery, counted 1, gives the same number), without a `dedup_key` (a broker
        that dedups would drop the copy), then acks this delivery. A body that is not a JSON
        object with an integer `attempt` is released with `release` (counted). Transports whose
        broker can un-count a delivery override this (SQLite and memory decrement their count).
        """
        body = fold_attempts(delivery.body, delivery.deliveries - 1)
        if body is None:
            self.release(delivery, delay=delay)
            return
        self.send(
            [
                Message(
                    queue=delivery.queue,
                    body=body,
                    id=delivery.id,
                    delay=delay,
                    priority=_priority_of(body),
                )
            ]
        )
        self.ack([delivery])

    def peek(self, queues: Sequence[str], *, limit: int = DEFAULT_PEEK_LIMIT) -> list[bytes]:
        """Up to `limit` bodies of messages in `queues` not yet acked (ready or delayed, and
        leased ones where the transport sees them), without leasing them or using a delivery.
        For `jobkit check`, which lists job names nobody serves. Raises `BrokerUnavailable`.

        Best effort: the default returns nothing (a transport that cannot look without taking).
        A transport whose look counts as a delivery (SQS) must not count it as an attempt.
        """
        return []

    @abstractmethod
    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """Move the message to its queue's dead-letter queue, keeping the body intact and
        recording `reason`. Idempotent."""

    @abstractmethod
    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        """Set the lease to end `lease` from now. A no-op if the message was acked already."""

    @abstractmethod
    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        """List the dead-letter queue of `queue`, oldest first, without changing it."""

    @abstractmethod
    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those with `ids`) back to `queue`; returns how many.

        Must not lose or duplicate: each message is on exactly one of the two queues at any
        moment a reader can observe, or (where the broker cannot move atomically) is sent to
        `queue` before it is removed from the dead-letter queue.
        """

    @abstractmethod
    def purge(self, queue: str) -> int:
        """Delete every dead letter of `queue`; returns how many."""

    @abstractmethod
    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Depths per queue (all known queues when `queues` is None). Approximate on brokers
        that only approximate."""

    # -- migration (see `jobkit.backend.Backend.export_jobs` for the protocol) ------------------

    def export(
        self,
        queues: Sequence[str],
        *,
        max_messages: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """Hand out up to `max_messages` messages of `queues` that nobody holds, with their state,
        under an export lease of `lease`: until it ends (or `release_export`), no worker receives
        them and `export` does not return them again. Messages leased by a worker are not
        returned. Does not count as a delivery. Blocks briefly (no long wait).

        The default leases due messages with `receive` (so delayed ones are left until due, and
        dead letters are not exported) and folds the deliveries before this one into `attempt`.
        Transports that can see their delayed messages and dead letters override it (and say so
        in `Capabilities.migration`).
        """
        deliveries = self.receive(queues, max_messages=max_messages, wait=timedelta(0), lease=lease)
        return [
            ExportedJob(
                queue=d.queue,
                id=d.id,
                body=fold_attempts(d.body, d.deliveries - 1) or d.body,
                priority=_priority_of(d.body),
                dedup_key=_key_of(d.body),
                receipt=d.receipt,
                native=d,
            )
            for d in deliveries
        ]

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        """Delete exported messages from this transport for good (they are on the target now).
        Returns the ids that could not be deleted because their export lease had run out and a
        worker took them (they are on both sides then). Idempotent.

        The default acks the deliveries `export` made; it cannot tell a stale one, so it
        returns nothing.
        """
        self.ack([job.native for job in jobs if isinstance(job.native, Delivery)])
        return []

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        """End the export lease early: the messages are as they were before `export` (same
        remaining delay, same attempts). Idempotent where the transport can tell.

        The default releases the deliveries uncounted."""
        for job in jobs:
            if isinstance(job.native, Delivery):
                self.release_uncounted(job.native)

    def import_messages(self, jobs: Sequence[ExportedJob]) -> set[str]:
        """Store exported jobs (from any transport or backend) with their id, body, priority,
        remaining delay, and dead letters as dead letters; returns the ids not stored because a
        message with that id is here already. Durable before returning, like `send`.

        The default sends the live ones with `send` (it cannot look messages up by id, so it
        returns nothing) and raises `UnsupportedFeature` for a dead letter.
        """
        dead = [job.id for job in jobs if job.dead]
        if dead:
            raise UnsupportedFeature(
                asked=f"import {len(dead)} dead letter(s) (e.g. {dead[0]}) "
                f"into {self.capabilities.name}",
                supported=f"{self.capabilities.name} cannot store a dead letter directly",
                change="Migrate without --include-dead, or replay the dead letters first",
            )
        self.send([message_of(job) for job in jobs])
        return set()

    def present(self, ids: Sequence[str]) -> set[str] | None:
        """Which of `ids` have a message here (ready, delayed, leased or dead), or None when the
        transport cannot look messages up by id (the default)."""
        return None

    def clone(self) -> Transport:
        """A new instance with the same configuration, for another thread. Default: self,
        for transports that are thread-safe."""
        return self

    def connect(self) -> None:  # noqa: B027 - optional hook
        """Open what the first call would open (clients, connections) now. A worker calls it
        on each of its instances before it leases anything, so that no lease is spent waiting
        for it. Blocks for the round trips it needs; idempotent; raises `BrokerUnavailable`
        when the broker cannot be reached. Default: nothing."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""


def fold_attempts(body: bytes, used: int) -> bytes | None:
    """`body` with `used` more attempts counted in its envelope's `attempt`, or None when it
    is not a JSON object with an integer `attempt` (then it cannot carry the count)."""
    try:
        data = json.loads(body)
        attempt = data["attempt"]
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            raise TypeError(attempt)
    except (ValueError, TypeError, KeyError):
        return None
    if used == 0:
        return body
    data["attempt"] = max(attempt + used, 0)
    return json.dumps(data, separators=(",", ":")).encode()


def _field(body: bytes, name: str) -> object:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _priority_of(body: bytes) -> int:
    value = _field(body, "priority")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _key_of(body: bytes) -> str | None:
    value = _field(body, "idempotency_key")
    return value if isinstance(value, str) else None


def message_of(job: ExportedJob) -> Message:
    """The message that carries an exported (live) job on another transport."""
    return Message(
        queue=job.queue,
        body=job.body,
        id=job.id,
        delay=job.delay,
        priority=job.priority,
        dedup_key=job.dedup_key,
    )
