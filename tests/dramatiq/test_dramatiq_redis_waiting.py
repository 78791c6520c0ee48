"""dramatiq+redis's receive, with nothing to take, blocks on the queue's doorbell instead of
polling Redis: a push, a delayed message falling due and a release each end the wait.

The URL's heartbeat is 600 s, so one doorbell wait may last 30 s (1/20 of it): a receive that
missed its wake-up would return only at the end of its `wait`, far later than the bounds here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from jobkit_dramatiq.config import parse_url
from jobkit_dramatiq.redis_transport import RedisTransport

from jobkit.spi import Delivery, Message, new_job_id
from tests.dramatiq.conftest import QUEUE
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

_LEASE = timedelta(seconds=30)
_WAIT = timedelta(seconds=20)
_WOKEN_WITHIN = 10.0  # s: well under `_WAIT`, well over a wake-up on a loaded machine


@pytest.fixture
def config(redis_url: str) -> Any:
    return parse_url(f"{redis_url}?heartbeat=600")


@pytest.fixture
def transport(config: Any) -> Iterator[RedisTransport]:
    found = RedisTransport(config, results=False)
    yield found
    found.close()


@pytest.fixture
def other(config: Any) -> Iterator[RedisTransport]:
    """A second process's transport: its own client."""
    found = RedisTransport(config, results=False)
    yield found
    found.close()


def _fetches(transport: RedisTransport) -> list[float]:
    """The times of the transport's fetch-script calls from now on."""
    calls: list[float] = []
    real = transport._fetch

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return real(*args, **kwargs)

    transport._fetch = counted
    return calls


def _message(delay: timedelta = timedelta(0)) -> Message:
    job_id = new_job_id()
    body = b'{"job":"work.record","id":"' + job_id.encode() + b'"}'
    return Message(queue=QUEUE, body=body, id=job_id, delay=delay, job="work.record")


class _Receiving(threading.Thread):
    """One receive of `QUEUE` (`max_messages` 1, `_WAIT`) in a thread of its own."""

    def __init__(self, transport: RedisTransport) -> None:
        super().__init__(daemon=True)
        self.transport = transport
        self.got: list[Delivery] | None = None
        self.took = 0.0

    def run(self) -> None:
        started = time.monotonic()
        self.got = self.transport.receive([QUEUE], max_messages=1, wait=_WAIT, lease=_LEASE)
        self.took = time.monotonic() - started


def _blocked(transport: RedisTransport) -> None:
    """Until a client of the server is blocked in XREAD (CLIENT LIST flag ``b``): the receive
    waits on the doorbells, so what ends its wait is the doorbell."""
    clients: Any = transport.client.client_list

    wait_until(
        lambda: any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in clients()),
        what="the receive waiting on the doorbell",
    )


def test_an_idle_receive_does_not_poll_redis(transport: RedisTransport) -> None:
    calls = _fetches(transport)
    got = transport.receive([QUEUE], max_messages=1, wait=timedelta(seconds=2), lease=_LEASE)
    assert got == []
    # looks, reads the doorbells, looks again, waits out the 2 s, looks a last time (polling
    # from 5 ms doubling to 100 ms made about 25 calls)
    assert len(calls) <= 4


def test_a_waiting_receive_takes_a_message_sent_meanwhile(
    transport: RedisTransport, other: RedisTransport
) -> None:
    calls = _fetches(transport)
    receiving = _Receiving(transport)
    receiving.start()
    _blocked(transport)
    sent = _message()
    other.send([sent])
    receiving.join(timeout=_WAIT.total_seconds() + 10)
    assert receiving.got is not None and [d.id for d in receiving.got] == [sent.id]
    assert receiving.took < _WOKEN_WITHIN and len(calls) == 3


def test_a_delayed_message_ends_the_wait_when_it_falls_due(
    transport: RedisTransport, other: RedisTransport
) -> None:
    sent = _message(delay=timedelta(seconds=1))
    other.send([sent])
    receiving = _Receiving(transport)
    receiving.run()  # in this thread
    assert receiving.got is not None and [d.id for d in receiving.got] == [sent.id]
    assert 0.9 <= receiving.took < _WOKEN_WITHIN


def test_a_released_message_wakes_a_waiting_receive(
    transport: RedisTransport, other: RedisTransport
) -> None:
    sent = _message()
    other.send([sent])
    [held] = other.receive([QUEUE], max_messages=1, wait=timedelta(seconds=5), lease=_LEASE)
    receiving = _Receiving(transport)
    receiving.start()
    _blocked(transport)
    other.release(held)
    receiving.join(timeout=_WAIT.total_seconds() + 10)
    assert receiving.got is not None and [d.id for d in receiving.got] == [sent.id]
    assert receiving.took < _WOKEN_WITHIN
