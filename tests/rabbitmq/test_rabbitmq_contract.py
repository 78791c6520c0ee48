"""RabbitTransport against a real rabbitmq-server: the shared transport contract.

AMQP has no lease timer: a delivery stays with its connection until it is settled or the
connection is lost. The contract's lease-expiry tests are replaced here by what stands for
them on RabbitMQ: a lost connection gives the message back, counted.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from jobkit_rabbitmq import RabbitTransport, parse_url

from jobkit.spi import Transport
from tests.rabbitmq.conftest import url_of
from tests.servers.rabbitmq import RabbitServer
from tests.transport_contract import LONG, TransportContract


class _RabbitContract(TransportContract):
    short = timedelta(seconds=1)
    query: dict[str, str] = {}

    @pytest.fixture(autouse=True)
    def _server(self, rabbit_server: RabbitServer, prefix: str) -> None:
        self._url = url_of(rabbit_server, prefix, **self.query)

    def make_transport(self) -> Transport:
        return RabbitTransport(parse_url(self._url))

    def lapse(self, delta: timedelta) -> None:
        time.sleep(delta.total_seconds())  # real time: the lapse is the point

    def _reconnected(self, transport: Transport) -> None:
        """Stands for a lease running out: the connection that holds the deliveries is lost."""
        link = transport._link  # type: ignore[attr-defined]
        link.call(lambda s: s.connection.close(), "drop the connection")

    def test_expired_lease_redelivers_with_incremented_count(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1, lease=self.short)
        self._reconnected(transport)
        (second,) = self.receive_n(transport, 1)
        assert (second.id, second.body) == (first.id, b"a")
        assert second.deliveries == 2

    def test_delivery_is_held_past_its_lease_until_settled(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (_delivery,) = self.receive_n(transport, 1, lease=self.short)
        self.lapse(self.short * 1.5)
        assert self.receive(transport) == []
        assert self.stats_of(transport, self.q()).in_flight == 1

    def _redelivered(self, transport: Transport) -> tuple:  # type: ignore[type-arg]
        self.send(transport, [b"a"])
        (old,) = self.receive_n(transport, 1, lease=self.short)
        self._reconnected(transport)
        (new,) = self.receive_n(transport, 1, lease=LONG)
        assert new.deliveries == 2
        return old, new

    def test_stale_receipt_extend_does_not_change_the_newer_lease(
        self, transport: Transport
    ) -> None:
        old, new = self._redelivered(transport)
        transport.extend(old, lease=LONG)
        transport.release(new)
        (third,) = self.receive_n(transport, 1)
        assert third.deliveries == 3


class TestQuorumContract(_RabbitContract):
    pass


class TestClassicPriorityContract(_RabbitContract):
    query = {"queue_type": "classic", "max_priority": "10"}
