"""dramatiq+amqp's receive, with nothing to take, waits in the connection for a push instead of
polling it, and a send or ack from another thread does not wait behind that wait."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from jobkit_dramatiq.amqp_transport import AmqpTransport
from jobkit_dramatiq.config import parse_url

from jobkit.spi import Delivery, Message
from tests.dramatiq.conftest import QUEUE
from tests.servers.rabbitmq import RabbitServer
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

_LEASE = timedelta(seconds=30)
_OTHER = f"{QUEUE}-other"


@pytest.fixture
def transport(amqp_url: str, rabbit_server: RabbitServer) -> Iterator[AmqpTransport]:
    rabbit_server.delete_queues(_OTHER, f"{_OTHER}.DQ", f"{_OTHER}.XQ")
    found = AmqpTransport(parse_url(amqp_url), results=False)
    yield found
    found.close()
    rabbit_server.delete_queues(_OTHER, f"{_OTHER}.DQ", f"{_OTHER}.XQ")


class _Receiving(threading.Thread):
    """One receive of `QUEUE` (`max_messages` 1) in a thread of its own."""

    def __init__(self, transport: AmqpTransport, wait: timedelta) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.wait = wait
        self.got: list[Delivery] | None = None

    def run(self) -> None:
        self.got = self.transport.receive([QUEUE], max_messages=1, wait=self.wait, lease=_LEASE)


def _waiting_in_connection(transport: AmqpTransport) -> None:
    link = transport._link
    wait_until(lambda: link.lock.polling is not None, what="the receive waiting in the connection")


def test_idle_receive_does_not_poll_the_connection(transport: AmqpTransport) -> None:
    transport.receive([QUEUE], max_messages=1, wait=timedelta(0), lease=_LEASE)  # connects
    conn: Any = transport._link.conn
    calls: list[float | None] = []
    real = conn.process_data_events

    def counted(time_limit: float | None = 0) -> None:
        calls.append(time_limit)
        real(time_limit)

    conn.process_data_events = counted
    got = transport.receive([QUEUE], max_messages=1, wait=timedelta(seconds=2), lease=_LEASE)
    assert got == []
    # one look, one wait of the whole 2 s, one look after it (a poll every 2-50 ms made ~45)
    assert len(calls) <= 6, calls


def test_waiting_receive_takes_a_message_pushed_meanwhile(
    transport: AmqpTransport, amqp_url: str
) -> None:
    receiving = _Receiving(transport, timedelta(seconds=60))
    receiving.start()
    _waiting_in_connection(transport)
    producer = AmqpTransport(parse_url(amqp_url), results=False)
    try:
        producer.send([Message(queue=QUEUE, body=b"{}", id="pushed")])
    finally:
        producer.close()
    receiving.join(timeout=50)  # well before its 60 s wait would end
    assert not receiving.is_alive(), "the receive did not wake for the message"
    assert [d.id for d in receiving.got or []] == ["pushed"]
    transport.ack(receiving.got or [])


def test_send_from_another_thread_does_not_wait_for_a_waiting_receive(
    transport: AmqpTransport,
) -> None:
    receiving = _Receiving(transport.clone(), timedelta(seconds=60))  # the same connection
    receiving.start()
    _waiting_in_connection(transport)
    transport.send([Message(queue=_OTHER, body=b"{}", id="elsewhere")])
    assert receiving.is_alive(), "the send waited until the receive's wait had ended"
    transport.send([Message(queue=QUEUE, body=b"{}", id="ends-the-wait")])
    receiving.join(timeout=50)
    assert [d.id for d in receiving.got or []] == ["ends-the-wait"]
    transport.ack(receiving.got or [])
