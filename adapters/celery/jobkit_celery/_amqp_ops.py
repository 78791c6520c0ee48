"""Queues, dead letters and raw access on RabbitMQ, straight through py-amqp.

Every work queue is declared with a dead-letter exchange (the default exchange, routing key
``jobkit.dlq.<queue>``) and ``x-max-priority: 10``; producers and workers declare it with the
same arguments. Dead letters that jobkit moves itself carry ``x-jobkit-*`` headers (reason, time,
deliveries); messages RabbitMQ dead-letters natively (a rejected Celery message) are read back
from their Celery headers and ``x-death``.
"""

from __future__ import annotations

import bisect
import functools
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import unquote, urlsplit

import amqp

import jobkit
from jobkit import spi
from jobkit_celery._names import delay_queue_name, dlq_name
from jobkit_celery._returns import Returns
from jobkit_celery._wire import envelope_from_message

_REQUEUE_WAIT_S = 2.0
"""How long a listing of dead letters waits for RabbitMQ to put back what it fetched."""

MAX_PRIORITY = 10


def work_queue_arguments(queue: str) -> dict[str, Any]:
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(queue),
        "x-max-priority": MAX_PRIORITY,
    }


MAX_TTL_MS = 2**32 - 1
"""RabbitMQ's largest `x-message-ttl` (about 49.7 days)."""


def _delay_buckets() -> tuple[int, ...]:
    """Every TTL a delay queue may have, in ms: 1 s apart up to a minute, 10 s up to 10 min,
    30 s up to 20 min, 1 min up to an hour, then 1/20 of the TTL apart (in whole minutes) up to
    `MAX_TTL_MS`: a delay is at most 1 s + 1/6 of it late (`Capabilities.delay_rounding`), a
    delay of an hour or more at most 1/20 of it.

    A fixed, finite set (about 320) so that any process can count a queue's delayed messages
    by asking for each bucket by name: AMQP 0-9-1 cannot list queues, and without a job store
    no process knows which buckets another one used."""
    out = [*range(1_000, 60_001, 1_000), *range(70_000, 600_001, 10_000)]
    out += [*range(630_000, 1_200_001, 30_000), *range(1_260_000, 3_600_001, 60_000)]
    while out[-1] < MAX_TTL_MS:
        out.append(min(MAX_TTL_MS, out[-1] + max(60_000, out[-1] // 20 // 60_000 * 60_000)))
    return tuple(out)


DELAY_BUCKETS = _delay_buckets()


def delay_ttl_ms(seconds: float) -> int:
    """The delay bucket for a delay of `seconds`: the smallest of `DELAY_BUCKETS` not below it
    (rounded *up*: a job never runs early). Raises `ValueError` past `MAX_TTL_MS`
    (`Capabilities.max_delay` refuses such a delay at enqueue)."""
    ms = max(1, int(seconds * 1000 + 0.999))
    i = bisect.bisect_left(DELAY_BUCKETS, ms)
    if i == len(DELAY_BUCKETS):
        raise ValueError(f"a delay of {seconds} s is longer than RabbitMQ's largest TTL")
    return DELAY_BUCKETS[i]


def delay_queue_arguments(queue: str, ttl_ms: int) -> dict[str, Any]:
    return {
        "x-message-ttl": ttl_ms,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue,
        # Unused bucket queues disappear, but only well after their last message is due.
        "x-expires": ttl_ms * 2 + 300_000,
    }


def connection_params(broker_url: str) -> dict[str, Any]:
    parts = urlsplit(broker_url)
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    return {
        "host": f"{parts.hostname or '127.0.0.1'}:{parts.port or 5672}",
        "userid": unquote(parts.username or "guest"),
        "password": unquote(parts.password or "guest"),
        "virtual_host": vhost or "/",
        "connect_timeout": 10,
    }


class _QueueGone(jobkit.BrokerUnavailable):
    """A queue this process had declared is gone (deleted while it ran)."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _again_if_gone(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run `method` once more if a queue it uses was deleted meanwhile (it declares them again
    then). Raises `BrokerUnavailable` if it is gone again."""

    @functools.wraps(method)
    def again(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except _QueueGone:
            return method(*args, **kwargs)

    return again


class AmqpOps:
    """Thread-safe (one lock around one connection); reconnects after fork or a broken link.
    Queues are declared once per connection; one deleted since is declared again."""

    def __init__(self, broker_url: str) -> None:
        self.params = connection_params(broker_url)
        self._lock = threading.RLock()
        self._conn: amqp.Connection | None = None
        self._pid = 0
        self._declared: set[str] = set()

    @contextmanager
    def _channel(self, what: str) -> Iterator[Any]:
        with self._lock:
            try:
                if self._conn is None or self._pid != os.getpid() or not self._conn.connected:
                    self._conn = amqp.Connection(**self.params)
                    self._conn.connect()
                    self._pid = os.getpid()
                    self._declared = set()
                channel = self._conn.channel()
            except (OSError, amqp.exceptions.AMQPError) as exc:
                self._conn = None
                raise jobkit.BrokerUnavailable(f"cannot {what} on RabbitMQ: {exc}") from exc
            try:
                yield channel
            except (OSError, amqp.exceptions.ConnectionError) as exc:
                self._conn = None
                raise jobkit.BrokerUnavailable(f"cannot {what} on RabbitMQ: {exc}") from exc
            except amqp.exceptions.NotFound as exc:
                # a queue this process declared was deleted since: declare again next time
                self._declared.clear()
                raise _QueueGone(f"cannot {what} on RabbitMQ: {exc}") from exc
            finally:
                try:
                    if channel.is_open:
                        channel.close()
                except (OSError, amqp.exceptions.AMQPError):
                    self._conn = None

    def declare(self, channel: Any, queue: str) -> None:
        """Declare `queue` (with its dead-letter arguments) and its dead-letter queue."""
        if queue in self._declared:
            return
        channel.queue_declare(dlq_name(queue), durable=True, auto_delete=False)
        channel.queue_declare(
            queue, durable=True, auto_delete=False, arguments=work_queue_arguments(queue)
        )
        channel.exchange_declare(queue, "direct", durable=True, auto_delete=False)
        channel.queue_bind(queue, queue, routing_key=queue)
        self._declared.add(queue)

    @_again_if_gone
    def ensure_queues(self, queues: Sequence[str]) -> None:
        with self._channel("declare queues") as channel:
            for queue in queues:
                self.declare(channel, queue)

    def dead_letter(
        self, *, queue: str, job_id: str | None, body: bytes, reason: str, deliveries: int
    ) -> None:
        headers = {
            "x-jobkit-id": job_id or uuid.uuid4().hex,
            "x-jobkit-reason": reason,
            "x-jobkit-dead-at": spi.SystemClock().now().isoformat(),
            "x-jobkit-deliveries": deliveries,
        }
        message = amqp.Message(
            body, content_type="application/json", delivery_mode=2, application_headers=headers
        )
        self._publish_to(queue, message, dlq_name(queue), "dead-letter a job")

    def _get_all(
        self, channel: Any, queue: str, limit: int | None
    ) -> Iterator[tuple[Any, spi.DeadLetter]]:
        self.declare(channel, queue)
        taken = 0
        while limit is None or taken < limit:
            message = channel.basic_get(dlq_name(queue), no_ack=False)
            if message is None:
                return
            taken += 1
            yield message, to_dead_letter(queue, message)

    @_again_if_gone
    def task_names(self, queue: str, limit: int) -> list[str]:
        """The task names of up to `limit` messages waiting in `queue`: fetched unacked, then
        the channel closes and RabbitMQ puts them back (marked redelivered, which jobkit does
        not count as an attempt: it counts starts)."""
        names: list[str] = []
        with self._channel("look at waiting messages") as channel:
            self.declare(channel, queue)
            while len(names) < limit:
                message = channel.basic_get(queue, no_ack=False)
                if message is None:
                    break
                headers = message.properties.get("application_headers") or {}
                names.append(str(headers.get("task") or "(undecodable)"))
        return names

    @_again_if_gone
    def dead_letters(self, queue: str, limit: int) -> list[spi.DeadLetter]:
        """Read without removing: the messages are fetched unacked, then the channel closes and
        RabbitMQ puts them back in order. Returns once they are back (or after
        `_REQUEUE_WAIT_S`): RabbitMQ requeues them after the close has returned, and a replay
        issued right after a listing found the dead-letter queue empty."""
        before = self.depth(dlq_name(queue))
        with self._channel("list dead letters") as channel:
            letters = [dead for _, dead in self._get_all(channel, queue, max(limit, 1))]
        deadline = time.monotonic() + _REQUEUE_WAIT_S
        while self.depth(dlq_name(queue)) < before and time.monotonic() < deadline:
            time.sleep(0.005)  # the broker's requeue has no event to wait on over AMQP
        return letters

    @_again_if_gone
    def replay(
        self, queue: str, ids: Sequence[str] | None, send: Callable[[spi.DeadLetter], None]
    ) -> int:
        """`send` each matching dead letter to `queue`, then ack it off the dead-letter queue."""
        wanted = set(ids) if ids is not None else None
        count = 0
        with self._channel("replay dead letters") as channel:
            for message, dead in self._get_all(channel, queue, None):
                if wanted is not None and dead.id not in wanted:
                    continue  # left unacked: back on the queue when the channel closes
                send(dead)
                channel.basic_ack(message.delivery_tag)
                count += 1
        return count

    @_again_if_gone
    def purge(self, queue: str) -> int:
        with self._channel("purge dead letters") as channel:
            self.declare(channel, queue)
            return int(channel.queue_purge(dlq_name(queue)) or 0)

    def ping(self) -> None:
        """Open (or reuse) the connection and a channel. Raises `BrokerUnavailable`."""
        with self._channel("connect"):
            pass

    def depth(self, name: str) -> int:
        """Ready messages in the queue `name` (0 if it does not exist)."""
        with self._channel("read queue depth") as channel:
            try:
                _, count, _ = channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                return 0
            return int(count)

    def delayed(self, queue: str, ttls_ms: Sequence[int]) -> int:
        return sum(self.depth(delay_queue_name(queue, ttl)) for ttl in ttls_ms)

    def publish_raw(
        self, queue: str, body: bytes, content_type: str | None, *, message_id: str | None = None
    ) -> None:
        message = amqp.Message(
            body, content_type=content_type, delivery_mode=2, message_id=message_id
        )
        self._publish_to(queue, message, queue, "publish a message")

    def _publish_to(self, queue: str, message: Any, routing_key: str, what: str) -> None:
        """Publish `message` through the default exchange to `routing_key` (`queue` or its
        dead-letter queue), mandatory and confirmed. If RabbitMQ returns it (the queue was
        deleted since this process declared it), declare `queue` again and publish once more.
        Raises `BrokerUnavailable`, or `JobkitError` if it is returned twice."""
        for _ in range(2):
            returns = Returns()
            with self._channel(what) as channel:
                channel.events["basic_return"].add(returns)
                self.declare(channel, queue)
                channel.confirm_select()
                channel.basic_publish_confirm(
                    message, exchange="", routing_key=routing_key, mandatory=True
                )
            if not returns.take():
                return
            self._declared.discard(queue)
        raise jobkit.JobkitError(
            f"cannot {what}: RabbitMQ had no queue {routing_key!r}, even after declaring it "
            "again; nothing was stored"
        )

    def republish(
        self, *, exchange: str, routing_key: str, body: bytes, properties: dict[str, Any]
    ) -> None:
        """Publish a copy of a delivered message (its body and AMQP properties, headers
        included) through `exchange` with `routing_key`; returns once RabbitMQ confirmed it."""
        with self._channel("publish a message again") as channel:
            channel.confirm_select()
            channel.basic_publish_confirm(
                amqp.Message(body, **properties), exchange=exchange, routing_key=routing_key
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self._conn.close()
                except (OSError, amqp.exceptions.AMQPError):
                    pass
            self._conn = None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def to_dead_letter(queue: str, message: Any) -> spi.DeadLetter:
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    headers: dict[str, Any] = dict(message.headers or {})
    if "x-jobkit-reason" in headers:
        dead_at = headers.get("x-jobkit-dead-at")
        return spi.DeadLetter(
            queue=queue,
            id=_text(headers.get("x-jobkit-id") or uuid.uuid4().hex),
            body=body,
            reason=_text(headers["x-jobkit-reason"]),
            dead_at=datetime.fromisoformat(_text(dead_at)) if dead_at else None,
            deliveries=int(headers.get("x-jobkit-deliveries") or 0),
        )
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = f"dead-lettered by RabbitMQ ({_text(death.get('reason', 'unknown'))})"
    when = death.get("time")
    try:
        env = envelope_from_message(headers, body)
        job_id, body = env.id, env.encode()
    except jobkit.SerializationError:
        job_id = uuid.uuid5(uuid.NAMESPACE_OID, body.hex()).hex
    return spi.DeadLetter(
        queue=queue,
        id=job_id,
        body=body,
        reason=reason,
        dead_at=when if isinstance(when, datetime) else None,
        deliveries=int(death.get("count", 1) or 1),
    )


def is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True
