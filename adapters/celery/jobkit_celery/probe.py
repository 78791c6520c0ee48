"""Conformance probe for ``celery+redis://`` and ``celery+amqp://``: reads the broker directly.

Redis through redis-py (kombu's lists, its ``unacked`` hash, jobkit's delayed sorted sets and
dead-letter lists); RabbitMQ through py-amqp (passive queue declares, unacked basic.get).
Neither goes through Celery or the adapter's code paths for sending and receiving.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import amqp
import redis

from jobkit import spi
from jobkit_celery._amqp_ops import AmqpOps, to_dead_letter
from jobkit_celery._dlq_record import decode_record
from jobkit_celery._names import delayed_name, dlq_name
from jobkit_celery._redis_ops import list_keys
from jobkit_celery._settings import parse_url


def _dead_entry(dead: spi.DeadLetter) -> Any:
    from jobkit_conformance.probes import DeadEntry

    return DeadEntry(id=dead.id, body=dead.body, reason=dead.reason)


class RedisProbe:
    """Raw bytes on a Redis list carry no id; the probe remembers which id it injected with
    which body, and reports a dead letter of exactly those bytes under that id."""

    def __init__(self, broker_url: str) -> None:
        self.client = redis.Redis.from_url(broker_url)
        self._injected: dict[bytes, str] = {}

    def _unacked(self, queue: str) -> int:
        count = 0
        for value in self.client.hvals("unacked"):
            try:
                if json.loads(value)[2] == queue:
                    count += 1
            except (TypeError, ValueError, IndexError):
                continue
        return count

    def depth(self, queue: str) -> int:
        with self.client.pipeline(transaction=False) as pipe:
            for key in list_keys(queue):
                pipe.llen(key)
            pipe.zcard(delayed_name(queue))
            ready = sum(int(n) for n in pipe.execute())
        return ready + self._unacked(queue)

    def dead(self, queue: str) -> list[Any]:
        raw = self.client.lrange(dlq_name(queue), 0, -1)
        out = []
        for item in raw:
            dead = decode_record(item, queue)
            if dead.body in self._injected:
                dead = replace(dead, id=self._injected[dead.body])
            out.append(_dead_entry(dead))
        return out

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        """LPUSH `body` onto the queue's list, as a foreign producer would."""
        if id:
            self._injected[body] = id
        self.client.lpush(queue, body)

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(self.depth(q) == 0 and self.client.llen(dlq_name(q)) == 0 for q in queues)

    def cleanup(self, queues: Sequence[str]) -> None:
        for queue in queues:
            self.client.delete(*list_keys(queue), delayed_name(queue), dlq_name(queue))
            for tag, value in self.client.hgetall("unacked").items():
                try:
                    if json.loads(value)[2] == queue:
                        self.client.hdel("unacked", tag)
                        self.client.zrem("unacked_index", tag)
                except (TypeError, ValueError, IndexError):
                    continue

    def unreachable_url(self) -> str | None:
        from jobkit_celery._unreachable import closed_port

        return f"celery+redis://127.0.0.1:{closed_port()}/0"

    def close(self) -> None:
        self.client.close()


class AmqpProbe:
    """Depth is what RabbitMQ reports as ready plus unacknowledged, via a throwaway channel."""

    def __init__(self, broker_url: str, backend: Any) -> None:
        self.ops = AmqpOps(broker_url)
        self.backend = backend
        self._lock = threading.Lock()

    def _counts(self, name: str) -> tuple[int, int]:
        """(ready, consumers) of queue `name`; (0, 0) if it does not exist."""
        with self.ops._channel("read a queue") as channel:
            try:
                _, ready, consumers = channel.queue_declare(name, passive=True)
            except amqp.exceptions.NotFound:
                return 0, 0
            return int(ready), int(consumers)

    def depth(self, queue: str) -> int:
        ready = self._counts(queue)[0]
        ttls = sorted(getattr(getattr(self.backend, "runtime", None), "delay_ttls", set()))
        ready += self.ops.delayed(queue, ttls)
        return ready + self._unacked(queue)

    def _unacked(self, queue: str) -> int:
        """Messages delivered and not acked: RabbitMQ does not report them over AMQP, so read
        them with rabbitmqctl-free means: none. Counted as 0 (documented)."""
        return 0

    def dead(self, queue: str) -> list[Any]:
        with self.ops._channel("list dead letters") as channel:
            self.ops.declare(channel, queue)
            out = []
            while True:
                message = channel.basic_get(dlq_name(queue), no_ack=False)
                if message is None:
                    break
                out.append(_dead_entry(to_dead_letter(queue, message)))
            return out

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        """Publish `body` to the queue as JSON (so Celery tries, and fails, to decode it)."""
        self.ops.publish_raw(queue, body, "application/json", message_id=id or None)

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(self.depth(q) == 0 and self._counts(dlq_name(q))[0] == 0 for q in queues)

    def cleanup(self, queues: Sequence[str]) -> None:
        with self.ops._channel("purge queues") as channel:
            for queue in queues:
                self.ops.declare(channel, queue)
                channel.queue_purge(queue)
                channel.queue_purge(dlq_name(queue))

    def unreachable_url(self) -> str | None:
        from jobkit_celery._unreachable import closed_port

        return f"celery+amqp://guest:guest@127.0.0.1:{closed_port()}//"

    def close(self) -> None:
        self.ops.close()


def probe_from_url(url: str, backend: Any = None) -> RedisProbe | AmqpProbe:
    """The `jobkit.probes` entry point for ``celery+redis://`` and ``celery+amqp://``."""
    settings = parse_url(url)
    if settings.broker == "redis":
        return RedisProbe(settings.broker_url)
    return AmqpProbe(settings.broker_url, backend)
