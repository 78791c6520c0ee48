"""Behaviour every `jobkit.spi.Transport` must show, as a base class of tests.

Use it by subclassing in a test module (the subclass's name must start with ``Test``)::

    class TestMyTransport(TransportContract):
        short = timedelta(seconds=1)

        def make_transport(self) -> Transport: ...
        def lapse(self, delta: timedelta) -> None: ...   # let transport time pass

`make_transport` returns a transport; it may be connected to a shared broker, since every test
uses queue names from `self.q(...)`, unique per test. `prepare` (optional) creates those queues
first on brokers that need it. `lapse` makes `delta` of the
transport's time pass: advance a `ManualClock`, or really sleep (the sleep is the point).

Class attributes describe what the broker can do:

- `short`: a lease or delay the broker honours and the tests can afford to wait out;
- `ordered`: delivery is oldest first within a priority (False for SQS standard queues).

Priorities are checked when the transport claims more than one level, FIFO otherwise.
A broker that cannot tell a stale receipt from the current one subclasses
`TransportContractCore` (everything but the stale-receipt tests) instead.
"""

from __future__ import annotations

from jobkit.spi import Delivery, Transport
from tests.transport_contract._base import LONG, QUEUE_NAMES, ContractBase
from tests.transport_contract._dead_letters import DeadLetterTests
from tests.transport_contract._delivery import DeliveryTests

__all__ = ["LONG", "QUEUE_NAMES", "ContractBase", "TransportContract", "TransportContractCore"]


class TransportContractCore(DeliveryTests, DeadLetterTests):
    """Everything but the stale-receipt tests."""


class TransportContract(TransportContractCore):
    """The whole contract, for brokers that can tell a stale receipt from the current one."""

    # -- stale receipts ----------------------------------------------------------------------

    def _redelivered(self, transport: Transport) -> tuple[Delivery, Delivery]:
        self.send(transport, [b"a"])
        (old,) = self.receive_n(transport, 1, lease=self.short)
        self.lapse(self.short * 1.5)
        (new,) = self.receive_n(transport, 1, lease=LONG)
        assert new.deliveries == 2
        return old, new

    def test_stale_receipt_ack_does_not_remove_redelivered_message(
        self, transport: Transport
    ) -> None:
        old, new = self._redelivered(transport)
        transport.ack([old])
        assert self.stats_of(transport, self.q()).in_flight == 1
        transport.ack([new])
        assert self.stats_of(transport, self.q()).in_flight == 0

    def test_stale_receipt_release_does_not_end_the_newer_lease(self, transport: Transport) -> None:
        old, _ = self._redelivered(transport)
        transport.release(old)
        assert self.receive(transport) == []
        assert self.stats_of(transport, self.q()).in_flight == 1

    def test_stale_receipt_dead_letter_does_not_move_the_newer_delivery(
        self, transport: Transport
    ) -> None:
        old, new = self._redelivered(transport)
        transport.dead_letter(old, reason="stale")
        assert self.dead(transport) == []
        transport.ack([new])
        assert self.stats_of(transport, self.q()).in_flight == 0

    def test_stale_receipt_extend_does_not_change_the_newer_lease(
        self, transport: Transport
    ) -> None:
        self.send(transport, [b"a"])
        (old,) = self.receive_n(transport, 1, lease=self.short)
        self.lapse(self.short * 1.5)
        self.receive_n(transport, 1, lease=self.short)
        transport.extend(old, lease=LONG)
        self.lapse(self.short * 1.5)
        (third,) = self.receive_n(transport, 1)
        assert third.deliveries == 3
