"""Deliberately broken backends, for the conformance suite's self-test.

Each wraps the transport of a real backend (the part of the URL after ``+``) and breaks one
promise of the `jobkit.spi.Transport` contract. Most faults live in the broker layer, where a real
adapter would get them wrong; two belong to the worker's decisions in reality and are simulated
at the transport boundary, where the worker's decision arrives:

* "retries permanent errors": the worker's ``dead_letter(reason="permanent error: ...")`` is
  turned into a ``release`` (retry), so a `Reject` runs again until attempts run out;
* "ignores time limits": the envelope's ``time_limit`` is removed from each delivered body, so
  the worker never stops the job.

Only `jobkit`'s public API is used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from jobkit import ConfigurationError, JobRecord
from jobkit.spi import (
    Capabilities,
    DeadLetter,
    Delivery,
    JobEvent,
    JobStore,
    Message,
    QueueStats,
    Transport,
    TransportBackend,
    open_backend,
)

FOREVER = timedelta(days=3650)


class Wrapped(Transport):
    """Delegates everything to `inner`; subclasses break one thing."""

    name = "mutant"

    def __init__(self, inner: Transport) -> None:
        self.inner = inner

    @property
    def capabilities(self) -> Capabilities:
        return replace(self.inner.capabilities, name=self.name)

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send(messages)

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        return self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self.inner.ack(deliveries)

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.release(delivery, delay=delay)

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.release_uncounted(delivery, delay=delay)

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        return self.inner.peek(queues, limit=limit)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        self.inner.dead_letter(delivery, reason=reason)

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self.inner.extend(delivery, lease=lease)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(queue, limit=limit)

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        return self.inner.replay(queue, ids=ids)

    def purge(self, queue: str) -> int:
        return self.inner.purge(queue)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return self.inner.stats(queues)

    def clone(self) -> Transport:
        return type(self)(self.inner.clone())

    def close(self) -> None:
        self.inner.close()


class AcksEarly(Wrapped):
    """Acknowledges on receipt (Celery's default): a crash mid-job loses the job."""

    name = "mutant-acks-early"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        if got:
            self.inner.ack(got)
        return got


class NoRedelivery(Wrapped):
    """Leases never run out: a message whose consumer died is never delivered again."""

    name = "mutant-no-redelivery"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        return self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=FOREVER)

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self.inner.extend(delivery, lease=FOREVER)


class DeliversTwice(Wrapped):
    """Stores every message twice, so each job is delivered twice."""

    name = "mutant-delivers-twice"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([m for m in messages for _ in range(2)])


class IgnoresDelay(Wrapped):
    """Delivers delayed messages (and retries) at once."""

    name = "mutant-ignores-delay"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([replace(m, delay=timedelta(0)) for m in messages])

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.release(delivery, delay=timedelta(0))


class NoDlq(Wrapped):
    """Drops what should be dead-lettered."""

    name = "mutant-no-dlq"

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        self.inner.ack([delivery])


class RetriesPermanent(Wrapped):
    """Retries permanent errors (see the module docstring)."""

    name = "mutant-retries-permanent"

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        if reason.startswith("permanent error"):
            self.inner.release(delivery)
        else:
            self.inner.dead_letter(delivery, reason=reason)


class IgnoresTimeLimit(Wrapped):
    """Strips the time limit from delivered envelopes (see the module docstring)."""

    name = "mutant-ignores-time-limit"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        return [replace(d, body=_strip_time_limit(d.body)) for d in got]


def _strip_time_limit(body: bytes) -> bytes:
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and "time_limit" in data:
        data["time_limit"] = None
        return json.dumps(data, separators=(",", ":")).encode()
    return body


class LosesOnRelease(Wrapped):
    """A released message (retry or shutdown) is removed instead of made visible again."""

    name = "mutant-loses-on-release"

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.ack([delivery])

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.ack([delivery])


class NoPriorities(Wrapped):
    """Claims priorities but drops them on send."""

    name = "mutant-no-priorities"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([replace(m, priority=0) for m in messages])


class NoExtend(Wrapped):
    """Lease extension does nothing: a job longer than its lease is delivered again."""

    name = "mutant-no-extend"

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        pass


class AckKeeps(Wrapped):
    """Ack does nothing: every finished message comes back when its lease runs out."""

    name = "mutant-ack-keeps"

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        pass


class DlqMangles(Wrapped):
    """Dead-letters a message with an empty reason and a truncated body."""

    name = "mutant-dlq-mangles"

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return [replace(d, body=d.body[:20]) for d in self.inner.dead_letters(queue, limit=limit)]

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        self.inner.dead_letter(replace(delivery, body=delivery.body[:20]), reason="")


class NoReplay(Wrapped):
    """Replay claims success but moves nothing."""

    name = "mutant-no-replay"

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        return len(ids) if ids is not None else 0


class NoDeliveryCount(Wrapped):
    """Reports every delivery as the first: retries never run out."""

    name = "mutant-no-delivery-count"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        return [replace(d, deliveries=1) for d in got]


class LosesOnSend(Wrapped):
    """Drops every fifth message it is given to send, without an error."""

    name = "mutant-loses-on-send"

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.sent = 0

    def send(self, messages: Sequence[Message]) -> None:
        keep = []
        for m in messages:
            self.sent += 1
            if self.sent % 5:
                keep.append(m)
        self.inner.send(keep)


class ReplayTwice(Wrapped):
    """Replay sends every replayed message twice."""

    name = "mutant-replay-twice"

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        wanted = [
            d for d in self.inner.dead_letters(queue, limit=10_000) if ids is None or d.id in ids
        ]
        moved = self.inner.replay(queue, ids=ids)
        self.inner.send([Message(queue=queue, body=d.body, id=d.id) for d in wanted])
        return moved


class NoLease(Wrapped):
    """Hands a message out without hiding it: every consumer gets it."""

    name = "mutant-no-lease"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        return self.inner.receive(
            queues, max_messages=max_messages, wait=wait, lease=timedelta(milliseconds=1)
        )

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        pass


class DelayNeverDue(Wrapped):
    """Delayed messages are never delivered (a scheduler that is not running)."""

    name = "mutant-delay-never-due"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([replace(m, delay=FOREVER) if m.delay else m for m in messages])


class ForgetfulStore(JobStore):
    """A job store that records everything but never reports a key as done."""

    def __init__(self, inner: JobStore) -> None:
        self.inner = inner

    def record(self, events: Sequence[JobEvent]) -> None:
        self.inner.record(events)

    def get(self, job_id: str) -> JobRecord | None:
        return self.inner.get(job_id)

    def done(self, keys: Sequence[str]) -> set[str]:
        return set()

    def close(self) -> None:
        self.inner.close()


def store_forgets(url: str) -> TransportBackend:
    _scheme, _, inner_url = url.partition("+")
    inner = open_backend(inner_url)
    if not isinstance(inner, TransportBackend):
        raise ConfigurationError(f"{inner_url!r} is not a transport backend")
    transport = Wrapped(inner.transport)
    transport.name = "mutant-store-forgets"
    return TransportBackend(
        transport, ForgetfulStore(inner.store), clock=inner.clock, default_lease=inner.default_lease
    )


def _wrap(url: str, kind: type[Wrapped]) -> TransportBackend:
    _scheme, sep, inner_url = url.partition("+")
    if not sep:
        raise ConfigurationError(f"{url!r}: write {kind.name}+<backend URL>")
    inner = open_backend(inner_url)
    if not isinstance(inner, TransportBackend):
        raise ConfigurationError(f"{inner_url!r} is not a transport backend")
    return TransportBackend(
        kind(inner.transport), inner.store, clock=inner.clock, default_lease=inner.default_lease
    )


def acks_early(url: str) -> TransportBackend:
    return _wrap(url, AcksEarly)


def no_redelivery(url: str) -> TransportBackend:
    return _wrap(url, NoRedelivery)


def delivers_twice(url: str) -> TransportBackend:
    return _wrap(url, DeliversTwice)


def ignores_delay(url: str) -> TransportBackend:
    return _wrap(url, IgnoresDelay)


def no_dlq(url: str) -> TransportBackend:
    return _wrap(url, NoDlq)


def retries_permanent(url: str) -> TransportBackend:
    return _wrap(url, RetriesPermanent)


def ignores_time_limit(url: str) -> TransportBackend:
    return _wrap(url, IgnoresTimeLimit)


def loses_on_release(url: str) -> TransportBackend:
    return _wrap(url, LosesOnRelease)


def no_priorities(url: str) -> TransportBackend:
    return _wrap(url, NoPriorities)


def no_extend(url: str) -> TransportBackend:
    return _wrap(url, NoExtend)


def ack_keeps(url: str) -> TransportBackend:
    return _wrap(url, AckKeeps)


def dlq_mangles(url: str) -> TransportBackend:
    return _wrap(url, DlqMangles)


def no_replay(url: str) -> TransportBackend:
    return _wrap(url, NoReplay)


def no_delivery_count(url: str) -> TransportBackend:
    return _wrap(url, NoDeliveryCount)


def loses_on_send(url: str) -> TransportBackend:
    return _wrap(url, LosesOnSend)


def replay_twice(url: str) -> TransportBackend:
    return _wrap(url, ReplayTwice)


def no_lease(url: str) -> TransportBackend:
    return _wrap(url, NoLease)


def delay_never_due(url: str) -> TransportBackend:
    return _wrap(url, DelayNeverDue)
