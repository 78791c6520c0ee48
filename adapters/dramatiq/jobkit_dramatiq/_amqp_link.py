"""The AMQP connection and channel one root `AmqpTransport` and its clones share, with the
queue declarations (Dramatiq's, see `amqp_transport`), its consumers, the deliveries they
brought that no `receive` has taken yet (`inbox`) and the delayed messages it holds."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions

from jobkit_dramatiq import _wire
from jobkit_dramatiq.config import DramatiqConfig

logger = logging.getLogger("jobkit.dramatiq")

HEARTBEAT_S = 2
_KEEPALIVE_S = 0.5


def dead_queue_arguments(config: DramatiqConfig) -> dict[str, Any]:
    """``Q.XQ``'s arguments: no TTL (dead letters kept until replayed or purged) unless the URL
    sets ``dead_ttl``."""
    if config.dead_ttl is None:
        return {}
    return {"x-message-ttl": int(config.dead_ttl.total_seconds() * 1000)}


def publish(
    channel: Any,
    queue: str,
    body: bytes,
    *,
    priority: int,
    headers: dict[str, Any] | None = None,
    message_id: str | None = None,
) -> None:
    """Publish `body` persistent onto `queue` through the default exchange, mandatory (an
    unroutable message raises on a confirming channel)."""
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=body,
        properties=pika.BasicProperties(
            delivery_mode=2,
            priority=priority or None,
            headers=headers or None,
            message_id=message_id,
        ),
        mandatory=True,
    )


def _nothing() -> None:
    """A callback that does nothing: queued only to end a blocked ``process_data_events``."""


class WakingLock:
    """The link's lock (reentrant, used as ``with link.lock``). Its holder may block in the
    connection waiting for deliveries (`Link.wait`); a thread that finds the lock taken first
    wakes that wait (pika's ``add_callback_threadsafe`` ends ``process_data_events`` early),
    so a send or an ack waits only for the holder's current step, not a whole receive wait.

    Holder and wanter never miss each other: a wanter counts itself in `wanting` before it
    reads `polling`, and the holder sets `polling` before it reads `wanting` (and then does not
    block at all). Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._guard = threading.Condition(threading.Lock())
        self.wanting = 0  # threads waiting for the lock
        self.polling: Any = None  # the connection the holder blocks in, or None

    def __enter__(self) -> None:
        if self._lock.acquire(blocking=False):
            return
        with self._guard:
            self.wanting += 1
        try:
            conn = self.polling
            if conn is not None:
                with contextlib.suppress(Exception):  # closed meanwhile: its wait ends anyway
                    conn.add_callback_threadsafe(_nothing)
            self._lock.acquire()
        finally:
            with self._guard:
                self.wanting -= 1
                self._guard.notify_all()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def let_others_in(self, timeout: float) -> None:
        """Wait, not holding the lock, until no other thread wants it (at most `timeout` s):
        a receive loop calls this between its waits, so that the send or ack that woke a wait
        gets the lock before the next wait takes it again."""
        with self._guard:
            self._guard.wait_for(lambda: self.wanting == 0, timeout)


@dataclass(frozen=True, kw_only=True)
class Arrival:
    """A delivery a consumer brought, waiting in `Link.inbox` for a `receive`."""

    queue: str
    method: Any
    props: Any
    body: bytes


class Link:
    """The connection and channel shared by a root transport and its clones. All use under
    `lock`. `generation` changes at each reconnect: receipts of an older one are stale."""

    def __init__(self, config: DramatiqConfig) -> None:
        self.config = config
        self.params = pika.URLParameters(config.broker_url)
        # RabbitMQ closes a connection after about two missed heartbeats: a stopped or hung
        # worker's messages go back within ~4-6 s (`redelivery_after` 8 s); `_keep` answers
        # them while no thread calls in
        self.params.heartbeat = HEARTBEAT_S
        self.params.blocked_connection_timeout = 30
        self.params.connection_attempts = 1
        self.lock = WakingLock()
        self.generation = 0
        self.conn: Any = None
        self.channel: Any = None
        self.declared: set[str] = set()
        self.consuming: set[str] = set()  # queues whose ``Q.DQ`` is consumed
        self.windows: dict[str, int] = {}  # queue -> prefetch window of its consumers
        self.consumers: list[str] = []  # consumer tags on the ready queues
        self.tags: dict[str, tuple[str, bool]] = {}  # consumer tag -> (queue, its ``Q.DQ``?)
        self.inbox: deque[Arrival] = deque()
        # delivery tag -> queue of each ready-queue delivery not settled yet
        self.unsettled: dict[int, str] = {}
        self.delayed: list[tuple[int, int, Any, Any, bytes]] = []  # (eta, seq, ...)
        self.seq = itertools.count()
        self.closed = False
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None

    def open(self) -> Any:
        """The channel, (re)connecting if needed. Call under `lock`."""
        if self.channel is not None and self.channel.is_open and self.conn.is_open:
            return self.channel
        self.drop()
        self.conn = pika.BlockingConnection(self.params)
        self.channel = self.conn.channel()
        self.channel.confirm_delivery()
        self.channel.add_on_cancel_callback(self._on_cancelled)
        self.generation += 1
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="jobkit-amqp-keep", daemon=True)
            self._keeper.start()
        return self.channel

    def wait(self, seconds: float) -> None:
        """Block in the connection up to `seconds` until a consumer's delivery is dispatched
        (or a cancel, or a confirm), or another thread wants `lock`; heartbeats are answered
        meanwhile. Not at all when a thread already waits for the lock. Call under `lock` on an
        open connection."""
        lock = self.lock
        lock.polling = self.conn
        try:
            self.conn.process_data_events(time_limit=0 if lock.wanting else max(seconds, 0.0))
        finally:
            lock.polling = None

    def next_due_in(self) -> float:
        """Seconds until the first delayed message held here is due (inf without one)."""
        if not self.delayed:
            return float("inf")
        return max(0.0, self.delayed[0][0] / 1000 - time.time())

    def drop(self) -> None:
        """Forget the connection (its unacked messages go back to their queues)."""
        conn, self.conn, self.channel = self.conn, None, None
        self.declared.clear()
        self.consuming.clear()
        self.windows.clear()
        self.consumers.clear()
        self.tags.clear()
        self.inbox.clear()
        self.unsettled.clear()
        self.delayed.clear()
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except Exception:  # it is going away either way
                logger.debug("closing the AMQP connection failed", exc_info=True)

    def declare(self, queue: str) -> None:
        if queue in self.declared:
            return
        ch = self.open()
        args: dict[str, Any] = {
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{queue}.XQ",
        }
        if self.config.priorities > 1:
            args["x-max-priority"] = self.config.priorities
        ch.queue_declare(queue=queue, durable=True, arguments=args)
        ch.queue_declare(queue=f"{queue}.DQ", durable=True, arguments=args)
        ch.queue_declare(
            queue=f"{queue}.XQ", durable=True, arguments=dead_queue_arguments(self.config)
        )
        self.declared.add(queue)

    def consume(self, queue: str, *, want: int) -> None:
        """Consume ``Q.DQ`` (every delayed message held until due) and `queue` with a prefetch
        window of the deliveries handed out and not settled yet plus `want`, what the caller
        can hold besides (so nothing waits in this process that a worker could not start; the
        inbox is not counted twice: it is part of `want`). A window that must grow
        gets one more consumer with the difference as its prefetch: basic.qos applies only to
        consumers started after it, and cancelling one would requeue, and so count, what is
        in transit. Call under `lock`."""
        self.declare(queue)
        ch = self.open()
        self.consume_delayed(queue)
        needed = min(65_535, max(1, len(self.unsettled) - len(self.inbox) + want))
        window = self.windows.get(queue, 0)
        if window >= needed:
            return

        def on_message(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            self.unsettled[method.delivery_tag] = queue
            self.inbox.append(Arrival(queue=queue, method=method, props=props, body=body))

        ch.basic_qos(prefetch_count=needed - window)
        tag = ch.basic_consume(queue=queue, on_message_callback=on_message)
        self.consumers.append(tag)
        self.tags[tag] = (queue, False)
        self.windows[queue] = needed

    def _on_cancelled(self, frame: Any) -> None:
        """RabbitMQ cancelled one of our consumers (its queue was deleted, or the node holding
        it failed): forget that queue's declaration and consumer, so that the next receive
        declares it again and consumes from it (else the worker would wait on it forever)."""
        tag = frame.method.consumer_tag
        queue, delayed = self.tags.pop(tag, ("", False))
        if not queue:
            return
        self.declared.discard(queue)
        if delayed:
            self.consuming.discard(queue)
        else:
            if tag in self.consumers:
                self.consumers.remove(tag)
            self.windows.pop(queue, None)
        logger.warning(
            "RabbitMQ cancelled the consumer of %s; it is declared and consumed again", queue
        )

    def stop_consuming(self) -> None:
        """Cancel the ready queues' consumers without RabbitMQ marking anything redelivered.
        Call under `lock` on an open connection.

        pika rejects (requeues, so RabbitMQ marks redelivered, so an attempt is counted) what
        arrives for a consumer it is cancelling. So first a channel-wide prefetch limit no
        higher than what the channel holds unsettled: RabbitMQ then sends no more to any of its
        consumers, and what it sent before arrives before the qos-ok and goes to `inbox`. Only
        when the channel holds nothing (limit 1) can one message still slip in and be counted.
        """
        self.conn.process_data_events(0)
        held = len(self.unsettled) + len(self.delayed)
        self.channel.basic_qos(prefetch_count=max(1, held), global_qos=True)
        self.conn.process_data_events(0)
        while self.consumers:
            tag = self.consumers.pop()
            self.tags.pop(tag, None)
            self.channel.basic_cancel(tag)
        self.windows.clear()

    def consume_delayed(self, queue: str) -> None:
        """Consume ``Q.DQ``: its messages are held in `delayed` until due. Call under `lock`."""
        if queue in self.consuming:
            return
        self.declare(queue)
        ch = self.open()

        def on_delayed(_ch: Any, method: Any, props: Any, body: bytes) -> None:
            message = _wire.decode(body)
            eta = (message or {}).get("options", {}).get("eta", 0)
            eta = eta if isinstance(eta, int | float) else 0
            heapq.heappush(self.delayed, (int(eta), next(self.seq), method, props, body))

        ch.basic_qos(prefetch_count=0)  # delayed: held until due, however many
        tag = ch.basic_consume(queue=f"{queue}.DQ", on_message_callback=on_delayed)
        self.tags[tag] = (queue, True)
        self.consuming.add(queue)

    def held(self) -> tuple[Counter[str], Counter[str], Counter[str]]:
        """Per queue, what this process holds: deliveries not settled (the inbox's included),
        those waiting in the inbox for a `receive`, and delayed messages held until due.
        Call under `lock`."""
        unsettled = Counter(self.unsettled.values())
        waiting = Counter(a.queue for a in self.inbox)
        delayed = Counter(m.routing_key.removesuffix(".DQ") for _, _, m, _, _ in self.delayed)
        return unsettled, waiting, delayed

    def ack(self, tags: Sequence[int]) -> None:
        """Ack the ready-queue deliveries `tags` (held in `unsettled`; others are skipped) and
        forget them. Call under `lock` on the channel that delivered them.

        When no delayed message is held, the oldest held deliveries, if all of them are among
        `tags`, are acked with one frame (``multiple``: pika's blocking channel writes and
        flushes every ack by itself). That acks exactly them: every delivery on the channel is
        in `unsettled` (ready queues) or `delayed` (``Q.DQ``) until it is settled, and a
        multiple ack covers every unsettled tag up to its own.
        """
        acking = {tag for tag in tags if tag in self.unsettled}
        if not acking:
            return
        oldest: list[int] = []
        if not self.delayed:
            oldest = list(itertools.takewhile(acking.__contains__, sorted(self.unsettled)))
        for tag in acking:
            del self.unsettled[tag]
        if oldest:
            self.channel.basic_ack(oldest[-1], multiple=len(oldest) > 1)
        for tag in sorted(acking.difference(oldest)):
            self.channel.basic_ack(tag)

    def publish(
        self,
        queue: str,
        body: bytes,
        *,
        priority: int,
        headers: dict[str, Any],
        message_id: str | None = None,
    ) -> None:
        publish(self.open(), queue, body, priority=priority, headers=headers, message_id=message_id)

    def _keep(self) -> None:
        while not self._stop.wait(_KEEPALIVE_S):
            if self.lock.polling is not None:
                continue  # a receive waits in the connection, answering heartbeats itself
            with self.lock:
                if self.closed:
                    return
                if self.conn is not None and self.conn.is_open:
                    try:
                        self.conn.process_data_events(0)
                    except Exception:  # the next call reconnects
                        logger.warning("AMQP connection lost", exc_info=True)
                        self.drop()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self._stop.set()
            self.drop()
