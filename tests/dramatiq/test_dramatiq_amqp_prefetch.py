"""dramatiq+amqp takes messages from a consumer with a prefetch window: what the consumer brought
but no `receive` took (never started) is given back uncounted when the transport closes; a queue
deleted under that consumer is declared and consumed again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jobkit_dramatiq.amqp_transport import AmqpTransport
from jobkit_dramatiq.config import parse_url

from jobkit.spi import Delivery, Message
from tests.dramatiq.conftest import QUEUE
from tests.servers.rabbitmq import RabbitServer
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

_WAIT = timedelta(seconds=5)
_LEASE = timedelta(seconds=30)


def _receive_all(transport: AmqpTransport, count: int) -> list[Delivery]:
    got: list[Delivery] = []

    def more() -> bool:
        got.extend(transport.receive([QUEUE], max_messages=count, wait=_WAIT, lease=_LEASE))
        return len(got) >= count

    wait_until(more, timeout=20, what=f"{count} deliveries")
    return got


def test_close_gives_back_prefetched_deliveries_uncounted(amqp_url: str) -> None:
    config = parse_url(amqp_url)
    first = AmqpTransport(config, results=False)
    try:
        first.send([Message(queue=QUEUE, body=b'{"n": %d}' % i, id=f"m{i}") for i in range(3)])
        (started,) = first.receive([QUEUE], max_messages=1, wait=_WAIT, lease=_LEASE)
        first.ack([started])  # the window (1) frees: the consumer brings the next one
        link = first._link
        wait_until(lambda: len(link.inbox) == 1, what="a prefetched delivery no receive took")
    finally:
        first.close()
    second = AmqpTransport(config, results=False)
    try:
        again = _receive_all(second, 2)
        second.ack(again)
    finally:
        second.close()
    assert sorted(d.id for d in again) == sorted({"m0", "m1", "m2"} - {started.id})
    assert [d.deliveries for d in again] == [1, 1]  # neither was started: no attempt counted


def test_prefetch_window_stays_what_the_receiver_can_hold(amqp_url: str) -> None:
    transport = AmqpTransport(parse_url(amqp_url), results=False)
    try:
        transport.send([Message(queue=QUEUE, body=b"{}", id=f"m{i}") for i in range(6)])
        held = _receive_all(transport, 2)  # a worker with room for 2
        transport.ack(held[:1])  # one finished: room for 1, which the consumer brings
        link = transport._link
        wait_until(lambda: len(link.inbox) == 1, what="the next delivery")
        (taken,) = transport.receive([QUEUE], max_messages=1, wait=_WAIT, lease=_LEASE)
        # 1 held + room for 1: the window is still 2, not 2 + the delivery already brought
        assert link.windows[QUEUE] == 2
        transport.ack([held[1], taken])
    finally:
        transport.close()


def test_a_queue_deleted_under_its_consumer_is_declared_and_consumed_again(
    amqp_url: str, rabbit_server: RabbitServer
) -> None:
    transport = AmqpTransport(parse_url(amqp_url), results=False)
    short = timedelta(seconds=0.2)
    try:
        assert transport.receive([QUEUE], max_messages=1, wait=short, lease=_LEASE) == []
        rabbit_server.delete_queues(QUEUE)  # RabbitMQ cancels the consumer
        wait_until(
            lambda: not transport.receive([QUEUE], max_messages=1, wait=short, lease=_LEASE)
            and rabbit_server.queue_exists(QUEUE),
            timeout=30, what="the queue declared again",
        )  # fmt: skip
        transport.send([Message(queue=QUEUE, body=b'{"n": 1}', id="after")])
        got = _receive_all(transport, 1)
        transport.ack(got)
        assert [d.id for d in got] == ["after"]
    finally:
        transport.close()


def test_acking_around_a_held_delivery_leaves_it_held(amqp_url: str) -> None:
    """The oldest held deliveries are acked with one multiple ack: it must stop at one still
    held, which comes back when the connection closes, and only it."""
    config = parse_url(amqp_url)
    first = AmqpTransport(config, results=False)
    try:
        first.send([Message(queue=QUEUE, body=b'{"n": %d}' % i, id=f"m{i}") for i in range(5)])
        got = sorted(_receive_all(first, 5), key=lambda d: d.id)
        assert [d.id for d in got] == ["m0", "m1", "m2", "m3", "m4"]
        first.ack([got[0], got[1], got[3]])  # "m0" and "m1" in one frame, "m3" alone
        first.ack([got[4]])  # "m2" still held: "m4" alone
    finally:
        first.close()
    second = AmqpTransport(config, results=False)
    try:
        back = _receive_all(second, 1)
        second.ack(back)
        assert (
            second.receive([QUEUE], max_messages=5, wait=timedelta(seconds=1), lease=_LEASE) == []
        )
    finally:
        second.close()
    assert [d.id for d in back] == ["m2"]
