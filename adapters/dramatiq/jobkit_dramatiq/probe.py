"""The conformance suite's probe for ``dramatiq+redis://`` and ``dramatiq+amqp://``: reads the
broker with redis-py and pika directly, on Dramatiq's layout (see `_redis_scripts` and
`amqp_transport`), not through the transports' code paths for sending and receiving.

RabbitMQ does not show messages held unacked by a consumer to AMQP clients: the AMQP probe's
depth counts ready and delayed-ready messages only.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pika
import redis

from jobkit_dramatiq.amqp_transport import AmqpTransport
from jobkit_dramatiq.config import DramatiqConfig, parse_url
from jobkit_dramatiq.redis_transport import RedisTransport


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _entry(id: str, body: bytes, reason: str) -> Any:
    from jobkit_conformance.probes import DeadEntry  # the suite's record type

    return DeadEntry(id=id, body=body, reason=reason)


class RedisProbe:
    """Thread-safe (redis-py's client is)."""

    def __init__(self, config: DramatiqConfig) -> None:
        self.config = config
        self.client: Any = redis.Redis.from_url(config.broker_url)
        self._reader = RedisTransport(config, results=False, client=self.client)

    def _key(self, queue: str) -> str:
        return f"{self.config.namespace}:{queue}"

    def depth(self, queue: str) -> int:
        key = self._key(queue)
        return int(self.client.hlen(f"{key}.msgs")) + int(self.client.hlen(f"{key}.DQ.msgs"))

    def dead(self, queue: str) -> list[Any]:
        return [
            _entry(d.id, d.body, d.reason) for d in self._reader.dead_letters(queue, limit=10**6)
        ]

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        """`body` as the message data under id `id`, as a foreign producer would store it."""
        key = self._key(queue)
        rid = id or "raw"
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(f"{key}.msgs", rid, body)
        pipe.rpush(key, rid)
        pipe.execute()

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(
            self.depth(q) == 0 and self.client.zcard(f"{self._key(q)}.XQ") == 0 for q in queues
        )

    def cleanup(self, queues: Sequence[str]) -> None:
        for queue in queues:
            key = self._key(queue)
            suffixes = ("", ".msgs", ".counts", ".DQ", ".DQ.msgs", ".DQ.due", ".XQ", ".XQ.msgs")
            self.client.delete(*[f"{key}{s}" for s in (*suffixes, ".XQ.why")])
            for ack in self.client.scan_iter(match=f"{self.config.namespace}:__acks__.*.{queue}"):
                self.client.delete(ack)

    def unreachable_url(self) -> str | None:
        return f"dramatiq+redis://127.0.0.1:{_closed_port()}/0"

    def close(self) -> None:
        self.client.close()


class AmqpProbe:
    """One pika connection per call (pika is not thread-safe)."""

    def __init__(self, config: DramatiqConfig) -> None:
        self.config = config
        self._reader = AmqpTransport(config, results=False)

    def _count(self, name: str) -> int:
        conn = pika.BlockingConnection(pika.URLParameters(self.config.broker_url))
        try:
            ch = conn.channel()
            try:
                return int(ch.queue_declare(name, passive=True).method.message_count)
            except pika.exceptions.ChannelClosedByBroker:
                return 0
        finally:
            if conn.is_open:
                conn.close()

    def depth(self, queue: str) -> int:
        return self._count(queue) + self._count(f"{queue}.DQ")

    def dead(self, queue: str) -> list[Any]:
        return [
            _entry(d.id, d.body, d.reason) for d in self._reader.dead_letters(queue, limit=10**6)
        ]

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        """Publish `body` onto the queue as a foreign producer would (persistent)."""
        self._reader.stats([queue])  # declares the queues as Dramatiq does
        conn = pika.BlockingConnection(pika.URLParameters(self.config.broker_url))
        try:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish(
                exchange="",
                routing_key=queue,
                body=body,
                properties=pika.BasicProperties(delivery_mode=2, message_id=id or None),
            )
        finally:
            conn.close()

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(self.depth(q) == 0 and self._count(f"{q}.XQ") == 0 for q in queues)

    def cleanup(self, queues: Sequence[str]) -> None:
        conn = pika.BlockingConnection(pika.URLParameters(self.config.broker_url))
        try:
            ch = conn.channel()
            for queue in queues:
                for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                    ch.queue_delete(name)
        finally:
            conn.close()

    def unreachable_url(self) -> str | None:
        return f"dramatiq+amqp://guest:guest@127.0.0.1:{_closed_port()}/%2F"

    def close(self) -> None:
        self._reader.close()


def probe_from_url(url: str) -> RedisProbe | AmqpProbe:
    """The `jobkit.probes` entry point for ``dramatiq+redis`` and ``dramatiq+amqp``."""
    config = parse_url(url)
    if config.broker == "redis":
        return RedisProbe(config)
    return AmqpProbe(config)


__all__ = ["AmqpProbe", "RedisProbe", "probe_from_url"]
