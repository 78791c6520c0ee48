"""The conformance suite's probe for RabbitMQ: reads and writes the queues with pika directly
(its own `Link`), bypassing `RabbitTransport`, to check what the transport claims.

- ``depth``: ready messages of the queue and of its delay queues. AMQP does not tell a client
  about other consumers' unacked messages, so those are not counted (the suite looks at depth
  once jobs have settled, when a queue must hold nothing);
- ``dead``: the DLQ read with basic_get on a channel that is then closed (order kept);
- ``inject_raw``: a plain persistent publish with ``message_id`` (the queue declared as jobkit
  would), as a foreign producer would;
- ``cleanup``: deletes the queue, its DLQ and its delay queues;
- ``unreachable_url``: the same URL on a loopback port nobody listens on.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pika import exceptions as px

from jobkit_rabbitmq import _wire as wire
from jobkit_rabbitmq._link import Link, Session
from jobkit_rabbitmq.config import RabbitConfig, parse_url
from jobkit_rabbitmq.dlq import dead_letter


class RabbitProbe:
    """Thread-safe (one `Link`)."""

    def __init__(self, url: str, config: RabbitConfig) -> None:
        self.url = url
        self.config = config
        self._link = Link(config)

    def depth(self, queue: str) -> int:
        def run(s: Session) -> int:
            names = [self.config.queue_name(queue)]
            names += [self.config.delay_name(queue, ms) for ms in self.config.delay_levels()]
            return sum(wire.count(s, name) or 0 for name in names)

        return self._link.call(run, "read queue counts")

    def dead(self, queue: str) -> list[Any]:
        from jobkit_conformance.probes import DeadEntry  # the suite's record type

        native = self.config.dlq_name(queue)
        got = self._link.call(lambda s: wire.peek_all(s, native, limit=100_000), "read a DLQ")
        letters = [dead_letter(queue, props, body) for props, body in got]
        return [DeadEntry(id=d.id, body=d.body, reason=d.reason) for d in letters]

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        def run(s: Session) -> None:
            native = wire.ensure(self._link, s, queue)
            wire.publish(
                self._link, s, [wire.Outgoing(routing_key=native, body=body, id=id, headers={})]
            )

        self._link.call(run, f"inject into {queue!r}")

    def is_empty(self, queues: Sequence[str]) -> bool:
        def run(s: Session) -> bool:
            for queue in queues:
                names = [self.config.queue_name(queue), self.config.dlq_name(queue)]
                if any(wire.count(s, name) for name in names):
                    return False
            return True

        return self._link.call(run, "read queue counts")

    def cleanup(self, queues: Sequence[str]) -> None:
        def run(s: Session) -> None:
            for queue in queues:
                names = [self.config.queue_name(queue), self.config.dlq_name(queue)]
                names += [self.config.delay_name(queue, ms) for ms in self.config.delay_levels()]
                for name in names:
                    try:
                        s.admin_channel().queue_delete(name)
                    except px.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                    self._link.declared.discard(name)

        self._link.call(run, "delete queues")

    def unreachable_url(self) -> str | None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        parts = urlsplit(self.url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def close(self) -> None:
        self._link.close()


def probe_from_url(url: str) -> RabbitProbe:
    return RabbitProbe(url, parse_url(url))
