"""SqsTransport against moto's server: the shared transport contract, real time, real HTTP."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from jobkit_sqs import SqsTransport, parse_url

from jobkit.spi import Transport
from tests.servers.moto import MotoServer
from tests.transport_contract import TransportContractCore


class TestSqsTransportContract(TransportContractCore):
    """Standard queues: unordered, and moto accepts a stale receipt handle (it removes or
    changes the newer delivery), so the stale-receipt part of the contract does not apply."""

    short = timedelta(seconds=2)
    ordered = False
    poll_timeout = 20.0

    @pytest.fixture(autouse=True)
    def _server(self, moto: MotoServer, prefix: str) -> None:
        self._url = moto.url(prefix=prefix, visibility="5")

    def make_transport(self) -> Transport:
        return SqsTransport(parse_url(self._url))

    def lapse(self, delta: timedelta) -> None:
        time.sleep(delta.total_seconds())  # real time: the lapse is the point

    def test_release_with_delay_hides_message_until_due(self, transport: Transport) -> None:
        """As in the contract, except that SQS counts a message released with a delay as in
        flight (invisible), not delayed: the delay is a visibility timeout."""
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1)
        due = self.now() + self.short
        transport.release(first, delay=self.short)
        self.assert_nothing_due_before(transport, due)
        stats = self.stats_of(transport, self.q())
        if self.now() < due:
            assert (stats.ready, stats.in_flight, stats.delayed) == (0, 1, 0)
        self.lapse(self.short)
        (second,) = self.receive_n(transport, 1)
        assert second.deliveries == 2
