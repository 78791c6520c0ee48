"""MemoryTransport: the transport contract on a ManualClock, plus what is specific to memory."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

import pytest

from jobkit import ConfigurationError
from jobkit.memory import MemoryTransport, backend_from_url
from jobkit.spi import (
    Delivery,
    ManualClock,
    MemoryJobStore,
    Message,
    Transport,
    TransportBackend,
    open_backend,
)
from tests.transport_contract import TransportContract


class TestMemoryTransportContract(TransportContract):
    short = timedelta(seconds=5)

    def make_transport(self) -> Transport:
        self.clock = ManualClock()
        return MemoryTransport(clock=self.clock)

    def lapse(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def now(self) -> datetime:
        return self.clock.now()


class _GenericUncountedRelease(MemoryTransport):
    """Memory, but with the `Transport` default of `release_uncounted` and `peek`."""

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        Transport.release_uncounted(self, delivery, delay=delay)

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        return Transport.peek(self, queues, limit=limit)


class TestGenericUncountedReleaseContract(TransportContract):
    """The default `release_uncounted` (send a copy with the attempt lowered, ack the original)
    keeps the contract too."""

    short = timedelta(seconds=5)

    def make_transport(self) -> Transport:
        self.clock = ManualClock()
        return _GenericUncountedRelease(clock=self.clock)

    def lapse(self, delta: timedelta) -> None:
        self.clock.advance(delta)

    def now(self) -> datetime:
        return self.clock.now()


def test_generic_release_uncounted_lowers_the_envelope_attempt_of_a_copy() -> None:
    transport = _GenericUncountedRelease(clock=ManualClock())
    body = json.dumps({"v": 1, "attempt": 1, "priority": 3, "future_field": [1]}).encode()
    transport.send([Message(queue="q", body=body, id="j1", dedup_key="k")])
    wait, lease = timedelta(0), timedelta(seconds=10)
    (first,) = transport.receive(["q"], max_messages=1, wait=wait, lease=lease)
    transport.release(first)
    (second,) = transport.receive(["q"], max_messages=1, wait=wait, lease=lease)
    assert second.deliveries == 2  # attempt number 1 + 2 = 3
    transport.release_uncounted(second)
    (third,) = transport.receive(["q"], max_messages=1, wait=wait, lease=lease)
    data = json.loads(third.body)
    assert (third.id, third.deliveries, data["attempt"]) == ("j1", 1, 2)  # still 3
    assert data["future_field"] == [1] and data["priority"] == 3  # the rest unchanged


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def transport(clock: ManualClock) -> MemoryTransport:
    return MemoryTransport(clock=clock)


def test_lease_ends_exactly_at_its_deadline(clock: ManualClock, transport: MemoryTransport) -> None:
    transport.send([Message(queue="q", body=b"a", id="1")])
    (first,) = transport.receive(
        ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=10)
    )
    assert first.leased_until == clock.now() + timedelta(seconds=10)
    clock.advance(timedelta(seconds=9.999))
    assert (
        transport.receive(
            ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=10)
        )
        == []
    )
    clock.advance(timedelta(seconds=0.001))
    (second,) = transport.receive(
        ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=10)
    )
    assert second.deliveries == 2


def test_ack_after_lease_expiry_but_before_redelivery_still_removes(
    clock: ManualClock, transport: MemoryTransport
) -> None:
    transport.send([Message(queue="q", body=b"a", id="1")])
    (first,) = transport.receive(
        ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=1)
    )
    clock.advance(timedelta(seconds=5))
    transport.ack([first])
    assert (
        transport.receive(
            ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=1)
        )
        == []
    )


def test_extend_after_expiry_before_redelivery_renews_the_lease(
    clock: ManualClock, transport: MemoryTransport
) -> None:
    transport.send([Message(queue="q", body=b"a", id="1")])
    (first,) = transport.receive(
        ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=1)
    )
    clock.advance(timedelta(seconds=5))
    transport.extend(first, lease=timedelta(seconds=60))
    assert (
        transport.receive(
            ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=1)
        )
        == []
    )
    assert transport.stats(["q"])[0].in_flight == 1


def test_priority_order_holds_across_queues(transport: MemoryTransport) -> None:
    transport.send([Message(queue="a", body=b"a-low", id="1", priority=1)])
    transport.send([Message(queue="b", body=b"b-high", id="2", priority=8)])
    got = transport.receive(
        ["a", "b"], max_messages=2, wait=timedelta(seconds=0), lease=timedelta(seconds=10)
    )
    assert [d.body for d in got] == [b"b-high", b"a-low"]


def test_receive_blocks_until_a_released_message_returns(transport: MemoryTransport) -> None:
    transport.send([Message(queue="q", body=b"a", id="1")])
    (first,) = transport.receive(
        ["q"], max_messages=1, wait=timedelta(seconds=0), lease=timedelta(seconds=10)
    )
    releaser = threading.Timer(0.1, lambda: transport.release(first))
    releaser.start()
    try:
        got = transport.receive(
            ["q"], max_messages=1, wait=timedelta(seconds=30), lease=timedelta(seconds=10)
        )
    finally:
        releaser.join()
    assert [(d.body, d.deliveries) for d in got] == [(b"a", 2)]


def test_concurrent_receivers_never_share_a_message(transport: MemoryTransport) -> None:
    transport.send([Message(queue="q", body=str(i).encode(), id=str(i)) for i in range(2000)])
    seen: list[list[str]] = [[] for _ in range(4)]

    def consume(index: int) -> None:
        while True:
            got = transport.receive(
                ["q"], max_messages=7, wait=timedelta(seconds=0), lease=timedelta(seconds=60)
            )
            if not got:
                return
            seen[index].extend(d.id for d in got)
            transport.ack(got)

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    all_ids = [i for ids in seen for i in ids]
    assert sorted(all_ids, key=int) == [str(i) for i in range(2000)]


def test_capabilities_say_memory_is_not_shared_across_processes(
    transport: MemoryTransport,
) -> None:
    caps = transport.capabilities
    assert (caps.name, caps.shared_across_processes, caps.redelivery) == (
        "memory",
        False,
        "lease expiry",
    )


def test_clone_is_the_same_thread_safe_instance(transport: MemoryTransport) -> None:
    assert transport.clone() is transport


def test_backend_from_url_gives_memory_transport_and_store() -> None:
    backend = backend_from_url("memory://")
    assert isinstance(backend, TransportBackend)
    assert isinstance(backend.transport, MemoryTransport)
    assert isinstance(backend.store, MemoryJobStore)
    assert backend.default_lease == timedelta(seconds=30)


def test_backend_from_url_reads_lease_option() -> None:
    assert backend_from_url("memory://?lease=7").default_lease == timedelta(seconds=7)


def test_open_backend_finds_memory_through_entry_point() -> None:
    assert isinstance(open_backend("memory://"), TransportBackend)


@pytest.mark.parametrize(
    "url", ["memory://somewhere", "memory:///path", "memory://?lease=0", "memory://?leese=3"]
)
def test_bad_memory_url_raises_configuration_error_saying_what_to_write(url: str) -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        backend_from_url(url)
