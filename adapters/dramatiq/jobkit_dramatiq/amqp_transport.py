"""`AmqpTransport`: jobkit's message-level transport on Dramatiq's RabbitMQ queue layout.

Queues are declared exactly as Dramatiq's ``RabbitmqBroker`` declares them (``Q`` and ``Q.DQ``
dead-lettering to ``Q.XQ``, priorities through ``x-max-priority``; ``Q.XQ`` with a message TTL,
none unless the URL sets ``dead_ttl``), so a plain ``dramatiq`` worker with the
broker `jobkit_dramatiq.native_broker` builds can share them. Messages are Dramatiq messages
(see `_wire`), persistent, published with confirms (``send`` returns once RabbitMQ has them).

Leases are the connection: an unacked message goes back to its queue when the connection
closes, so a killed worker's jobs are back at once. One connection and channel per root
transport, shared by its clones under a lock (pika is not thread-safe; delivery tags belong to
the channel); a daemon thread keeps pika's heartbeats flowing while no thread calls in.
Delayed messages wait on ``Q.DQ`` with Dramatiq's ``eta`` option: the transport holds them
unacked until due, then publishes them onto ``Q`` and acks them (Dramatiq's own worker does
the same). Delivery counts: ``jobkit-deliveries`` on copies made by release, plus one for a
redelivered message (RabbitMQ's classic queues count no further).

Receiving: a consumer per ready queue brings deliveries into the link's inbox ahead of
`receive`, with a prefetch window of what is unsettled plus what the receiver asks for (the
room it has, see `Link.consume`): nothing waits here that the worker could not start at once,
and no round trip per message. What the consumers brought but no `receive` took was never
started: `close` gives it back uncounted (a copy carrying its count, then an ack). Only a
crash (or a delivery in transit as the consumers are cancelled) brings such a message back
marked redelivered, one attempt counted. `export` takes with ``basic.get``: nothing prefetched.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pika.exceptions

from jobkit import BrokerUnavailable
from jobkit.spi import (
    Capabilities,
    DeadLetter,
    Delivery,
    ExportedJob,
    Message,
    MigrationSupport,
    QueueStats,
    Transport,
    replay_body,
)
from jobkit_dramatiq import _wire
from jobkit_dramatiq._amqp_link import Arrival, Link, publish
from jobkit_dramatiq.config import STORE_OPTION, DramatiqConfig

logger = logging.getLogger("jobkit.dramatiq")

_POLL_MIN_S = 0.002
_POLL_MAX_S = 0.05
_DELIVERIES = "jobkit-deliveries"
_REASON = "jobkit-reason"
_DEAD_AT = "jobkit-dead-at"


def amqp_capabilities(config: DramatiqConfig, *, results: bool) -> Capabilities:
    native = "" if config.hardened else " (native defaults)"
    return Capabilities(
        name=f"dramatiq+amqp{native}",
        redelivery="connection loss when a worker dies, or misses two 2 s heartbeats",
        redelivery_after=timedelta(seconds=8),
        scheduling_precision=timedelta(seconds=1),
        max_delay=None,
        priorities=config.priorities,
        results=results,
        idempotency_keys=results,
        store_option=STORE_OPTION,
        # a message a killed migrator held comes back marked redelivered: one attempt more
        migration=MigrationSupport(
            delayed_before_due=False,
            dead_letters=False,
            dedup="marker" if results else "none",
            killed_export_counts=True,
        ),
        survives_broker_restart=True,  # durable queues, persistent messages
        # AMQP 0-9-1 counts a queue's ready messages only; what other connections hold
        # unacknowledged (running, prefetched) shows nowhere without the management API
        in_flight_visible=False,
    )


def _unavailable(what: str, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"RabbitMQ unreachable while trying to {what}: {exc!r}")


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (pika.exceptions.AMQPError, OSError) as exc:
        raise _unavailable(what, exc) from exc


class AmqpTransport(Transport):
    """Thread-safe: every call takes the shared link's lock (`receive` does not hold it while
    it waits)."""

    receive_batch = 1  # receive takes from the inbox the consumers fill

    def __init__(self, config: DramatiqConfig, *, results: bool, link: Link | None = None):
        self.config = config
        self._results = results
        self._caps = amqp_capabilities(config, results=results)  # read on every enqueue
        self._root = link is None
        self._link = link or Link(config)
        self._exporting = False  # inside `export`: `receive` takes with basic.get

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def send(self, messages: Sequence[Message]) -> None:
        """Each message published persistent with a confirm; returns once all are confirmed."""
        link = self._link
        try:  # as `_translated`, without a generator per call: this runs for every enqueue
            with link.lock:
                try:
                    for m in messages:
                        self._publish(m)
                except (pika.exceptions.AMQPError, OSError):
                    link.drop()
                    raise
        except (pika.exceptions.AMQPError, OSError) as exc:
            raise _unavailable(f"send {len(messages)} message(s)", exc) from exc

    def _publish(self, m: Message, headers: dict[str, Any] | None = None) -> None:
        link = self._link
        link.declare(m.queue)
        if m.delay > timedelta(0):
            eta = _wire.eta_after(m.delay)
            data = _wire.encode(
                queue=f"{m.queue}.DQ", job_id=m.id, body=m.body, options={"eta": eta}, actor=m.job
            )
            link.publish(f"{m.queue}.DQ", data, priority=m.priority, headers=headers or {})
        else:
            data = _wire.encode(queue=m.queue, job_id=m.id, body=m.body, options={}, actor=m.job)
            link.publish(m.queue, data, priority=m.priority, headers=headers or {})

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Takes up to `max_messages` deliveries the queues' consumers brought (their prefetch
        window is what is unsettled plus `max_messages`, see `Link.consume`). With none there,
        blocks in the connection (`Link.wait`) until one is pushed, a delayed message is due,
        or `wait` is over; a send or an ack from another thread ends that wait early and goes
        first. Inside `export`, takes with ``basic.get`` instead, polling (2 ms doubling to
        50 ms, the lock free in between: see `export`)."""
        link = self._link
        deadline = time.monotonic() + wait.total_seconds()
        pause = _POLL_MIN_S
        while True:
            with _translated("receive messages"), link.lock:
                try:
                    if self._exporting:
                        got = self._get(queues, max_messages)
                    else:
                        got = self._take(queues, max_messages)
                        left = deadline - time.monotonic()
                        if not got and left > 0:
                            link.wait(min(left, link.next_due_in()))
                            got = self._take(queues, max_messages)
                except (pika.exceptions.AMQPError, OSError):
                    link.drop()
                    raise
            if got or time.monotonic() >= deadline:
                return got
            if self._exporting:
                time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
                pause = min(pause * 2, _POLL_MAX_S)
            else:
                link.lock.let_others_in(min(_POLL_MAX_S, max(deadline - time.monotonic(), 0)))

    def _take(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        """From the inbox, in arrival order. Under lock."""
        link = self._link
        for queue in queues:
            link.consume(queue, want=max_messages)
        link.conn.process_data_events(0)
        self._promote()
        names = set(queues)
        got: list[Delivery] = []
        kept: list[Arrival] = []
        while link.inbox and len(got) < max_messages:
            a = link.inbox.popleft()
            if a.queue in names:
                got.append(self._delivery(a.queue, a.method, a.props, a.body))
            else:
                kept.append(a)
        link.inbox.extendleft(reversed(kept))
        return got

    def _get(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        """``basic.get`` from each queue in turn until `max_messages` or the queues are empty.
        Under lock."""
        link = self._link
        for queue in queues:
            link.consume_delayed(queue)
        link.conn.process_data_events(0)
        self._promote()
        got: list[Delivery] = []
        for queue in queues:
            while len(got) < max_messages:
                method, props, body = link.channel.basic_get(queue, auto_ack=False)
                if method is None:
                    break
                link.unsettled[method.delivery_tag] = queue
                got.append(self._delivery(queue, method, props, body))
        return got

    def export(
        self,
        queues: Sequence[str],
        *,
        max_messages: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """As `Transport.export`, taking with ``basic.get`` rather than the consumer: nothing
        is prefetched for a migrator (a message it held but never exported would come back
        marked redelivered, counting an attempt, if it were killed), and a take that does not
        wait sees what is ready."""
        self._exporting = True
        try:
            return super().export(
                queues, max_messages=max_messages, lease=lease, include_dead=include_dead
            )
        finally:
            self._exporting = False

    def _delivery(self, queue: str, method: Any, props: Any, body: bytes) -> Delivery:
        headers = props.headers or {}
        before = headers.get(_DELIVERIES, 0)
        before = before if isinstance(before, int) else 0
        return Delivery(
            queue=queue,
            id=_wire.message_id(body, props.message_id or str(method.delivery_tag)),
            body=_wire.envelope_of(body),
            deliveries=before + 1 + (1 if method.redelivered else 0),
            receipt=f"{self._link.generation}|{method.delivery_tag}",
            native=(body, props.priority or 0, props.message_id),
        )

    def _promote(self) -> None:
        """Delayed messages that are due: onto their queue, then acked on ``Q.DQ``."""
        link = self._link
        now = time.time() * 1000
        while link.delayed and link.delayed[0][0] <= now:
            _eta, _seq, method, props, body = heapq.heappop(link.delayed)
            queue = method.routing_key.removesuffix(".DQ")
            data = _wire.with_options(body, eta=None)
            link.publish(
                queue,
                data,
                priority=props.priority or 0,
                headers=props.headers or {},
                message_id=props.message_id,
            )
            link.channel.basic_ack(method.delivery_tag)

    def _settle(self, delivery: Delivery) -> int | None:
        """The delivery tag, or None when the receipt is of an older connection (stale: the
        message went back to its queue when that connection closed)."""
        generation, _, tag = delivery.receipt.partition("|")
        if int(generation) != self._link.generation or self._link.channel is None:
            return None
        self._link.unsettled.pop(int(tag), None)
        return int(tag)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        link = self._link
        with _translated(f"ack {len(deliveries)} message(s)"), link.lock:
            if link.channel is None:
                return  # every receipt is stale: the messages went back when it closed
            tags = []
            for d in deliveries:
                generation, _, tag = d.receipt.partition("|")
                if int(generation) == link.generation:
                    tags.append(int(tag))
            link.ack(tags)

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._requeue(delivery, delay, counted=True)

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._requeue(delivery, delay, counted=False)

    def _requeue(self, delivery: Delivery, delay: timedelta, *, counted: bool) -> None:
        """A copy (with its delivery count) published, then the original acked: a crash in
        between leaves both (delivered twice, never lost)."""
        link = self._link
        raw, priority, message_id = delivery.native
        deliveries = delivery.deliveries if counted else delivery.deliveries - 1
        with _translated(f"release {delivery.id}"), link.lock:
            tag = self._settle(delivery)
            if tag is None:
                return
            data = _wire.with_options(raw, eta=None)
            if delay > timedelta(0):
                eta = _wire.eta_after(delay)
                data = _wire.with_options(data, eta=eta)
                target = f"{delivery.queue}.DQ"
            else:
                target = delivery.queue
            link.publish(
                target,
                data,
                priority=priority,
                headers={_DELIVERIES: deliveries},
                message_id=message_id,
            )
            link.channel.basic_ack(tag)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """A copy with the reason published on ``Q.XQ``, then the original acked."""
        link = self._link
        raw, priority, message_id = delivery.native
        with _translated(f"dead-letter {delivery.id}"), link.lock:
            tag = self._settle(delivery)
            if tag is None:
                return
            headers = {
                _REASON: reason,
                _DEAD_AT: int(time.time() * 1000),
                _DELIVERIES: delivery.deliveries,
            }
            link.declare(delivery.queue)
            link.publish(
                f"{delivery.queue}.XQ",
                raw,
                priority=priority,
                headers=headers,
                message_id=message_id,
            )
            link.channel.basic_ack(tag)

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        """A no-op: the lease lasts as long as the connection."""

    # -- dead letters and stats (on a channel of their own, closed after) --------------------

    @contextmanager
    def _side_channel(self, what: str) -> Iterator[Any]:
        link = self._link
        with _translated(what), link.lock:
            try:
                link.open()
                channel = link.conn.channel()
                channel.confirm_delivery()
            except (pika.exceptions.AMQPError, OSError):
                link.drop()
                raise
            try:
                yield channel
            finally:
                if channel.is_open:
                    channel.close()  # what it got and did not ack goes back, in order

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        with self._side_channel(f"list the dead letters of {queue}") as ch:
            self._link.declare(queue)
            while len(out) < limit:
                method, props, body = ch.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    break
                headers = props.headers or {}
                dead_at = headers.get(_DEAD_AT)
                out.append(
                    DeadLetter(
                        queue=queue,
                        id=_wire.message_id(body, props.message_id or str(method.delivery_tag)),
                        body=_wire.envelope_of(body),
                        reason=str(headers.get(_REASON, "dead-lettered by Dramatiq")),
                        dead_at=datetime.fromtimestamp(dead_at / 1000, UTC)
                        if isinstance(dead_at, int)
                        else None,
                        deliveries=int(headers.get(_DELIVERIES, 0) or 0),
                    )
                )
        return out

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Each chosen dead letter is published onto `queue` (attempts reset, confirmed), then
        acked on ``Q.XQ``; the others go back when the side channel closes."""
        wanted = set(ids) if ids is not None else None
        moved = 0
        with self._side_channel(f"replay the dead letters of {queue}") as ch:
            self._link.declare(queue)
            while True:
                method, props, body = ch.basic_get(f"{queue}.XQ", auto_ack=False)
                if method is None:
                    break
                if (
                    wanted is not None
                    and _wire.message_id(body, props.message_id or "") not in wanted
                ):
                    continue
                fresh = _wire.with_envelope(body, replay_body(_wire.envelope_of(body)))
                publish(ch, queue, fresh, priority=props.priority or 0, message_id=props.message_id)
                ch.basic_ack(method.delivery_tag)
                moved += 1
        return moved

    def purge(self, queue: str) -> int:
        with self._side_channel(f"purge the dead letters of {queue}") as ch:
            self._link.declare(queue)
            return int(ch.queue_purge(f"{queue}.XQ").method.message_count)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Ready, delayed and dead counts from RabbitMQ, plus what this process holds: its
        consumers' deliveries not handed out yet count as ready, those handed out and not
        settled as in flight, delayed messages it holds until due as delayed. Other processes'
        holdings (in flight, and the delayed messages a worker holds) are not visible to AMQP
        clients (`Capabilities.in_flight_visible`)."""
        out = []
        link = self._link
        with self._side_channel("read queue statistics") as ch:
            names = list(queues) if queues is not None else sorted(link.declared)
            unsettled, waiting, delayed = link.held()
            for queue in names:
                link.declare(queue)

                def count(name: str) -> int:
                    return int(ch.queue_declare(name, passive=True).method.message_count)

                out.append(
                    QueueStats(
                        queue=queue,
                        ready=count(queue) + waiting[queue],
                        in_flight=max(unsettled[queue] - waiting[queue], 0),
                        delayed=count(f"{queue}.DQ") + delayed[queue],
                        dead=count(f"{queue}.XQ"),
                    )
                )
        return out

    def clone(self) -> AmqpTransport:
        return AmqpTransport(self.config, results=self._results, link=self._link)

    def close(self) -> None:
        """The root transport gives back what its consumers brought that no `receive` took,
        uncounted (it was never started), then closes the connection; a clone's is a no-op."""
        if not self._root:
            return
        link = self._link
        with link.lock:
            if link.conn is not None and link.conn.is_open and link.channel is not None:
                try:
                    self._give_back_inbox()
                except (pika.exceptions.AMQPError, OSError):
                    logger.warning("could not give back unused deliveries", exc_info=True)
            link.close()

    def _give_back_inbox(self) -> None:
        """Stop consuming first (else the copies would come straight back), then release each
        waiting delivery uncounted. A crash in between duplicates, never loses. Under lock."""
        link = self._link
        link.stop_consuming()
        while link.inbox:
            a = link.inbox.popleft()
            self._requeue(
                self._delivery(a.queue, a.method, a.props, a.body), timedelta(0), counted=False
            )
