"""`RabbitTransport`: jobkit's leased-delivery `Transport` on RabbitMQ (pika).

Threads: pika is not thread-safe, so a transport and all its clones share one `Link`, which
owns the connection and lets one thread at a time touch it. `receive` takes deliveries from the
link's inbox; `ack`, `release`, `dead_letter` and `send` are run by the link's I/O thread, on
the channel that received the delivery (`send` runs in the calling thread when the link
consumes nothing: a producer's enqueue). Every method may be called from any thread; each
blocks until the broker has what it needs (publishes: until confirmed).

Leases: AMQP has no visibility timeout. A delivery stays with this connection until it is
settled or the connection dies: a crashed worker's connection closes at once, a hung one misses
its heartbeats (`heartbeat`, so within 3 x heartbeat), and the broker then requeues the
message. So the `lease` asked for in `receive` is not used, `extend` is a no-op, and a job
longer than the lease is never started a second time, up to the server's `consumer_timeout`
(after which the broker takes the message away, closes the channel and hands the message to
another consumer while the first still runs it). So no job may outlive it: `receive` hands the
worker each envelope with its time limit capped at `hold_bound` (90 % of `consumer_timeout`;
a job without one gets that), the worker stops a job at its limit and settles it (released
for a retry or dead-lettered) before the broker would take it away, and `jobkit check`
refuses time limits beyond the bound (see `jobkit_rabbitmq.RabbitBackend`). What is sent on
(released, dead-lettered, exported) is the body as it was published, not the capped one.

Counting deliveries: ``Delivery.deliveries`` = ``jobkit-prior`` header + the broker's count
(quorum ``x-delivery-count``; on classic queues only whether it was redelivered) + 1.
`release` and `release_uncounted` publish a copy carrying the count (confirmed) and then ack the
delivery: the broker's own delivery limit then counts only crash redeliveries, which makes it
a crash-loop backstop that dead-letters rather than drops.

Delays: see `jobkit_rabbitmq._wire`: a fixed set of delay queues per queue, each with one TTL;
a delay hops through them, largest first, and is honoured to within `precision`, late, never
early.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from jobkit import JobkitError, UnsupportedFeature
from jobkit.spi import (
    Capabilities,
    DeadLetter,
    Delivery,
    Message,
    MigrationSupport,
    QueueStats,
)
from jobkit_rabbitmq import _export, dlq
from jobkit_rabbitmq import _wire as wire
from jobkit_rabbitmq._export import ExportingTransport
from jobkit_rabbitmq._link import Arrival, Link, Session
from jobkit_rabbitmq._time_limit import cap_time_limit, hold_bound
from jobkit_rabbitmq.config import RESTART_SAFE_RETRY, STORE_OPTION, RabbitConfig


def capabilities_for(config: RabbitConfig, *, results: bool) -> Capabilities:
    return Capabilities(
        name=f"rabbitmq-{config.queue_type}",
        redelivery="connection loss: at once when a worker dies, after missed heartbeats when "
        "it hangs",
        # RabbitMQ closes a connection that sent nothing for two heartbeat intervals, looking
        # once an interval: up to three (28.8 s measured with heartbeat=10)
        redelivery_after=timedelta(seconds=3 * config.heartbeat),
        dead_letter=True,
        max_delay=None,
        priorities=config.priorities,
        dedup_window=None,
        time_limits=True,
        lease_extension=True,  # held until settled, up to the server's consumer_timeout
        results=results,
        idempotency_keys=results,
        store_option=STORE_OPTION,
        max_message_bytes=config.max_message_bytes,
        shared_across_processes=True,
        # AMQP 0-9-1 counts a queue's ready messages only; what other connections hold
        # unacknowledged (running, prefetched) shows nowhere without the management API
        in_flight_visible=False,
        scheduling_precision=config.precision + timedelta(seconds=0.5),  # + the hops' round trips
        # Queues durable, messages persistent and confirmed, delay queues dead-lettering at
        # least once. A delay that falls due while its target queue is still recovering after
        # a restart is resent by the broker only after the server's
        # dead_letter_worker_publisher_confirm_timeout (180 s by default): late, not lost. The
        # claim follows what the URL states of that setting (docs/adapters/rabbitmq.md).
        survives_broker_restart=config.dead_letter_retry <= RESTART_SAFE_RETRY,
        # delayed jobs and dead letters exported from their queues; ids deduplicated on import
        # through markers in the job store, which only a shared store keeps across processes
        migration=MigrationSupport(
            delayed_before_due=True,
            dead_letters=True,
            dedup="marker" if results else "none",
            killed_export_counts=True,  # a quorum queue counts the held message's delivery
        ),
    )


class RabbitTransport(ExportingTransport):
    """Thread-safe; `clone` shares the connection (see the module docstring)."""

    receive_batch = 1  # receive takes from the inbox the consumers fill

    def __init__(self, config: RabbitConfig, *, results: bool = False, link: Link | None = None):
        self.config = config
        self._results = results
        self._caps = capabilities_for(config, results=results)
        self._bound = hold_bound(config).total_seconds()
        self._link = link or Link(config)
        self._held = _export.Held()
        self._closed = False
        self._lock = threading.Lock()
        self._link.attach()

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def clone(self) -> RabbitTransport:
        return RabbitTransport(self.config, results=self._results, link=self._link)

    def close(self) -> None:
        """The last transport of a link gives back what it received but never handed out
        (uncounted), then closes the connection. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if not self._link.detach():
            return
        try:
            if self._link.connected:
                self._link.call(self._give_back_inbox, "give back unused deliveries")
        except JobkitError:
            pass  # the connection is gone: the broker has them back already
        self._link.close()

    # -- send --------------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """Validates every message, declares the queues it needs, publishes everything and waits
        for the broker's confirms (in chunks). Not atomic across messages: on an error some may
        be stored; none is confirmed that is not."""
        now_ms = wire.now_ms()
        items = [self._outgoing(message, now_ms) for message in messages]
        queues = {m.queue: m.delay > timedelta(0) for m in messages}

        def run(s: Session) -> None:
            for queue, delayed in queues.items():
                wire.ensure(self._link, s, queue)
                if delayed:
                    wire.ensure_delays(self._link, s, queue)
            wire.publish(self._link, s, items)

        self._link.call(run, f"send {len(items)} message(s)", inline=True)

    def _outgoing(self, message: Message, now_ms: int, *, prior: int = 0) -> wire.Outgoing:
        if message.priority and not 0 <= message.priority < self._caps.priorities:
            raise UnsupportedFeature(
                asked=f"message {message.id} has priority {message.priority}",
                supported=f"{self._caps.name} has priorities 0..{self._caps.priorities - 1}"
                if self._caps.priorities > 1
                else "quorum queues have no priorities",
                change="Use queue_type=classic (x-max-priority) for priorities, or drop them",
            )
        headers: dict[str, Any] = {wire.PRIOR: prior} if prior else {}
        target = self.config.queue_name(message.queue)
        if message.delay > timedelta(0):
            # rounded up: never due early (a due time rounded down ran jobs up to 1 ms early)
            due = wire.due_after(message.delay.total_seconds())
            headers[wire.DUE] = due
            target = self.config.delay_name(message.queue, self._level(due - now_ms))
        return wire.Outgoing(
            routing_key=target,
            body=message.body,
            id=message.id,
            headers=headers,
            priority=message.priority,
        )

    def _level(self, remaining_ms: int) -> int:
        """The delay queue for the next hop: the longest TTL not past the due time (the
        shortest when less than it remains: late by under `precision`, never early)."""
        levels = self.config.delay_levels()
        fitting = [ms for ms in levels if ms <= remaining_ms]
        return fitting[-1] if fitting else levels[0]

    # -- receive -----------------------------------------------------------------------------

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Takes up to `max_messages` deliveries from the inbox, waiting up to `wait` for the
        first. `lease` is not used (see the module docstring). Messages that surface before
        their due time are sent on to the next delay queue, uncounted, and not returned."""
        if not queues:
            return []
        link = self._link
        wanted = max(1, max_messages)
        names = set(queues)
        natives = [self.config.queue_name(q) for q in queues]
        if not link.consuming(natives) or self._waiting(names, wanted) < wanted:
            # Declares, consumes, grows the prefetch window, (re)connects: a round trip through
            # the I/O thread, which takes a while when that thread is parsing a stream of
            # deliveries. Made on every receive, it left the worker's job process idle in about
            # half of a drain's samples while deliveries waited here. Not needed while every
            # queue is consumed (a cancelled consumer is not) and enough deliveries wait.
            link.call(lambda s: wire.consume(link, s, queues, wanted), "consume")
        deadline = time.monotonic() + max(0.0, wait.total_seconds())
        while True:
            taken = self._take(names, wanted, deadline)
            now_ms = wire.now_ms()
            early: list[Arrival] = []
            due: list[Delivery] = []
            for a in taken:
                if wire.due_of(a.properties) > now_ms:
                    early.append(a)
                else:
                    due.append(self._delivery(a))
            if early:
                link.call(functools.partial(self._hop, arrivals=early), "send delayed on")
            if due or time.monotonic() >= deadline:
                return due

    def _waiting(self, names: set[str], enough: int) -> int:
        """How many deliveries from `names` of the current session wait in the inbox, counted
        up to `enough`."""
        link = self._link
        count = 0
        with link.arrived:
            for a in link.inbox:
                if a.queue in names and a.generation == link.generation:
                    count += 1
                    if count >= enough:
                        break
        return count

    def _take(self, names: set[str], wanted: int, deadline: float) -> list[Arrival]:
        link = self._link
        with link.arrived:
            while True:
                got = [a for a in link.inbox if a.queue in names][:wanted]
                if got:
                    for arrival in got:
                        link.inbox.remove(arrival)
                    return [a for a in got if a.generation == link.generation]
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                link.arrived.wait(left)

    def _hop(self, s: Session, *, arrivals: list[Arrival]) -> None:
        now_ms = wire.now_ms()
        items = []
        for a in arrivals:
            headers = wire.headers_of(a.properties)
            headers[wire.PRIOR] = wire.prior_of(a.properties) + wire.broker_count(
                a.properties, a.redelivered
            )
            ms = self._level(int(headers[wire.DUE]) - now_ms)
            items.append(
                wire.Outgoing(
                    routing_key=self.config.delay_name(a.queue, ms),
                    body=a.body,
                    id=a.properties.message_id or "",
                    headers={k: v for k, v in headers.items() if not k.startswith("x-")},
                    priority=a.properties.priority or 0,
                )
            )
        for a in arrivals:
            wire.ensure_delays(self._link, s, a.queue)
        wire.publish(self._link, s, items)
        for a in arrivals:
            wire.ack(s, a.generation, [a.tag])

    def _delivery(self, a: Arrival) -> Delivery:
        props = a.properties
        return Delivery(
            queue=a.queue,
            id=wire.message_id(props, a.body),
            body=cap_time_limit(a.body, self._bound),
            deliveries=wire.prior_of(props) + wire.broker_count(props, a.redelivered) + 1,
            receipt=f"{a.generation}:{a.tag}",
            leased_until=None,
            native=a,
        )

    def _give_back_inbox(self, s: Session) -> None:
        """Stop consuming first (else the copies would come straight back to this inbox), then
        put back uncounted copies of what was delivered but never received."""
        link = self._link
        wire.stop_consuming(s)
        with link.arrived:
            arrivals = [a for a in link.inbox if a.generation == s.generation]
            link.inbox.clear()
        if arrivals:
            self._republish(s, [(self._delivery(a), timedelta(0), 0) for a in arrivals])

    # -- settle ------------------------------------------------------------------------------

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_generation: dict[int, list[int]] = {}
        for d in deliveries:
            a = _arrival(d)
            by_generation.setdefault(a.generation, []).append(a.tag)
        if not by_generation:
            return

        def run(s: Session) -> None:
            for generation, tags in by_generation.items():
                wire.ack(s, generation, tags)

        self._link.call(run, f"ack {len(deliveries)} message(s)")

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """Publishes a copy counting this delivery (after `delay`), then acks this one."""
        self._settle(delivery, delay, counted=1, what="release")

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """As `release`, but the copy carries one delivery less: the next delivery computes the
        same attempt number as this one. A crash in between duplicates, never loses."""
        self._settle(delivery, delay, counted=0, what="release (uncounted)")

    def _settle(self, delivery: Delivery, delay: timedelta, *, counted: int, what: str) -> None:
        a = _arrival(delivery)

        def run(s: Session) -> None:
            if wire.held(s, a.generation, a.tag):
                self._republish(s, [(delivery, delay, counted)])

        self._link.call(run, f"{what} {delivery.id}")

    def _republish(self, s: Session, items: list[tuple[Delivery, timedelta, int]]) -> None:
        """Copies first (confirmed), then the acks: never lost, at worst delivered twice."""
        now_ms = wire.now_ms()
        out = []
        for d, delay, counted in items:
            a = _arrival(d)
            message = Message(
                queue=d.queue,
                body=a.body,
                id=a.properties.message_id or d.id,
                delay=delay,
                priority=a.properties.priority or 0,
            )
            prior = d.deliveries - 1 + counted
            out.append(self._outgoing(message, now_ms, prior=prior))
            if delay > timedelta(0):
                wire.ensure_delays(self._link, s, d.queue)
        wire.publish(self._link, s, out)
        for d, _, _ in items:
            a = _arrival(d)
            wire.ack(s, a.generation, [a.tag])

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """Publishes the body to the queue's DLQ with the reason (confirmed), then acks. A no-op
        for a delivery no longer held (settled already, or requeued by a lost connection)."""
        a = _arrival(delivery)

        def run(s: Session) -> None:
            if not wire.held(s, a.generation, a.tag):
                return
            wire.ensure(self._link, s, delivery.queue)
            headers = {
                wire.REASON: reason,
                wire.DEAD_AT: datetime.now(UTC).isoformat(),
                wire.DELIVERIES: delivery.deliveries,
            }
            out = wire.Outgoing(
                routing_key=self.config.dlq_name(delivery.queue),
                body=a.body,
                id=delivery.id,
                headers=headers,
            )
            wire.publish(self._link, s, [out])
            wire.ack(s, a.generation, [a.tag])

        self._link.call(run, f"dead-letter {delivery.id}")

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        """A no-op: the delivery is held until it is settled or the connection is lost."""

    # -- looking -----------------------------------------------------------------------------

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        """Takes up to `limit` ready messages with basic_get and puts uncounted copies back at
        the tail of their queue (a quorum queue would count a plain requeue as a delivery);
        the looked-at messages thus move behind the others. Messages held by workers and
        delayed ones are not seen."""
        link = self._link

        def run(s: Session) -> list[bytes]:
            bodies: list[bytes] = []
            for queue in dict.fromkeys(queues):
                native = wire.ensure(link, s, queue)
                channel = s.connection.channel()
                try:
                    got: list[tuple[Any, Any, bytes]] = []
                    while len(bodies) + len(got) < limit:
                        method, props, body = channel.basic_get(native, auto_ack=False)
                        if method is None:
                            break
                        got.append((method, props, body))
                    copies = []
                    for method, props, body in got:
                        headers = wire.headers_of(props)
                        headers[wire.PRIOR] = wire.prior_of(props) + wire.broker_count(
                            props, bool(method.redelivered)
                        )
                        copies.append(
                            wire.Outgoing(
                                routing_key=native,
                                body=body,
                                id=props.message_id or "",
                                headers={k: v for k, v in headers.items() if k[:2] != "x-"},
                                priority=props.priority or 0,
                            )
                        )
                    wire.publish(link, s, copies)
                    for method, _, _ in got:
                        channel.basic_ack(method.delivery_tag)
                    bodies.extend(body for _, _, body in got)
                finally:
                    if channel.is_open:
                        channel.close()
            return bodies

        return link.call(run, "peek")

    # -- dead letters and stats --------------------------------------------------------------

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        native = self.config.dlq_name(queue)
        got = self._link.call(lambda s: wire.peek_all(s, native, limit=limit), "list dead letters")
        return [dlq.dead_letter(queue, props, body) for props, body in got]

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Publishes each chosen dead letter to `queue` with its attempts reset (confirmed), then
        acks it on the DLQ; the others go back in place. Sent before removed: never lost."""
        return self._link.call(
            lambda s: dlq.replay(self._link, s, queue, ids), f"replay dead letters of {queue!r}"
        )

    def purge(self, queue: str) -> int:
        return self._link.call(lambda s: dlq.purge(self._link, s, queue), f"purge {queue!r}")

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Ready, delayed and dead from the broker's queue counts (exact); in flight is what
        this process holds: AMQP does not tell a client about other consumers' unacked
        messages (the management API does). Messages prefetched by this process but not yet
        received count as ready."""
        config = self.config
        link = self._link

        def run(s: Session) -> list[QueueStats]:
            names = list(queues) if queues is not None else wire.directory_names(link, s)
            out = []
            for queue in names:
                ready = wire.count(s, config.queue_name(queue))
                if ready is None and queues is None:
                    continue  # listed once, deleted since
                if ready is None:
                    out.append(QueueStats(queue=queue, ready=0, in_flight=0, delayed=0, dead=0))
                    continue
                delayed = 0
                levels = config.delay_levels()
                if wire.count(s, config.delay_name(queue, levels[0])) is not None:
                    delayed = sum(wire.count(s, config.delay_name(queue, ms)) or 0 for ms in levels)
                held = sum(1 for q in s.unsettled.values() if q == queue)
                with link.arrived:  # delivered to this process but not handed out: ready
                    waiting = sum(1 for a in link.inbox if a.queue == queue)
                out.append(
                    QueueStats(
                        queue=queue,
                        ready=ready + waiting,
                        in_flight=max(held - waiting, 0),
                        delayed=delayed,
                        dead=wire.count(s, config.dlq_name(queue)) or 0,
                    )
                )
            return out

        return link.call(run, "read queue counts")


def _arrival(delivery: Delivery) -> Arrival:
    native = delivery.native
    if not isinstance(native, Arrival):
        raise JobkitError(f"delivery {delivery.id} was not received by a RabbitMQ transport")
    return native
