"""Export for migration on Celery+RabbitMQ: messages fetched unacked on a channel of its own.

The export lease is that channel: `basic_get` without ack takes a message from the work queue,
its delay queues (the TTLs recorded in the job store, see `RedisJobStore.remember_delay`) or its
dead-letter queue; `commit` acks it, `release` rejects it back (a delayed one keeps its expiry).
A migrator killed mid-batch closes the connection and RabbitMQ puts every held message back.
The channel stays open until `close`; RabbitMQ's `consumer_timeout` (30 min by default) bounds
how long one batch may be held. Held messages do not show in `jobkit status` (AMQP shows no
unacked counts), nor do jobs source workers are running.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import amqp

import jobkit
from jobkit import spi
from jobkit_celery._amqp_ops import AmqpOps, to_dead_letter
from jobkit_celery._names import delay_queue_name, dlq_name
from jobkit_celery._wire import envelope_from_message


class AmqpExport:
    """Thread-safe (one lock around its channel)."""

    def __init__(self, ops: AmqpOps) -> None:
        self.ops = ops
        self._lock = threading.Lock()
        self._conn: amqp.Connection | None = None
        self._channel: Any = None

    def export(
        self, queue: str, *, limit: int, ttls: Sequence[int], include_dead: bool
    ) -> list[spi.ExportedJob]:
        sources = [(queue, "r")] + [(delay_queue_name(queue, t), "d") for t in ttls]
        if include_dead:
            sources.append((dlq_name(queue), "x"))
        # look before taking: a basic_get on a missing queue would close the held channel
        present = [(name, kind) for name, kind in sources if self.ops.depth(name) > 0]
        out: list[spi.ExportedJob] = []
        now = datetime.now(UTC)
        with self._lock, self._guard("export jobs"):
            channel = self._held()
            for name, kind in present:
                while len(out) < limit:
                    message = channel.basic_get(name, no_ack=False)
                    if message is None:
                        break
                    out.append(_exported(queue, kind, message, now))
        return out

    def commit(self, jobs: Sequence[spi.ExportedJob]) -> list[str]:
        with self._lock, self._guard("delete exported jobs"):
            channel = self._held()
            for job in jobs:
                channel.basic_ack(int(job.receipt))
        return []

    def release(self, jobs: Sequence[spi.ExportedJob]) -> None:
        with self._lock, self._guard("release exported jobs"):
            channel = self._held()
            for job in jobs:
                channel.basic_reject(int(job.receipt), requeue=True)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except (OSError, amqp.exceptions.AMQPError):
                    pass
            self._conn = self._channel = None

    def _held(self) -> Any:
        if self._conn is None or not self._conn.connected:
            self._conn = amqp.Connection(**self.ops.params)
            self._conn.connect()
            self._channel = self._conn.channel()
        return self._channel

    def _guard(self, what: str) -> Any:
        return _Guard(self, what)


class _Guard:
    def __init__(self, export: AmqpExport, what: str) -> None:
        self.export = export
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, OSError | amqp.exceptions.AMQPError):
            self.export._conn = self.export._channel = None  # its holds went back to the queues
            raise jobkit.BrokerUnavailable(f"cannot {self.what} on RabbitMQ: {exc}") from exc


def _exported(queue: str, kind: str, message: Any, now: datetime) -> spi.ExportedJob:
    tag = str(message.delivery_tag)
    if kind == "x":
        dead = to_dead_letter(queue, message)
        return spi.ExportedJob(
            queue=queue, id=dead.id, body=dead.body, dead_reason=dead.reason, receipt=tag
        )
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    headers: dict[str, Any] = dict(message.headers or {})
    try:
        env = envelope_from_message(headers, body)
    except jobkit.SerializationError:  # not a jobkit task: moved as it is
        return spi.ExportedJob(
            queue=queue, id=str(headers.get("id") or tag), body=body, receipt=tag
        )
    delay = env.not_before - now if env.not_before is not None else timedelta(0)
    return spi.ExportedJob(
        queue=queue,
        id=env.id,
        body=env.encode(),
        delay=max(delay, timedelta(0)),
        priority=env.priority,
        dedup_key=env.idempotency_key,
        receipt=tag,
    )
