"""Contract tests: send, receive, ack, release, leases."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

from jobkit.spi import Message, Transport
from tests.transport_contract._base import LONG, ContractBase
from tests.waiting import wait_until


class DeliveryTests(ContractBase):
    def test_send_then_receive_returns_body_id_and_first_delivery(
        self, transport: Transport
    ) -> None:
        (job_id,) = self.send(transport, [b"hello"])
        (delivery,) = self.receive_n(transport, 1)
        assert (delivery.queue, delivery.id, delivery.body) == (self.q(), job_id, b"hello")
        assert delivery.deliveries == 1
        assert delivery.receipt

    def test_body_bytes_round_trip_unchanged(self, transport: Transport) -> None:
        body = bytes(range(256)) + "naïve ✓".encode()
        self.send(transport, [body])
        (delivery,) = self.receive_n(transport, 1)
        assert delivery.body == body

    def test_received_message_is_invisible_while_leased(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        self.receive_n(transport, 1, lease=LONG)
        assert self.receive(transport) == []

    def test_receive_respects_max_messages(self, transport: Transport) -> None:
        self.send(transport, [f"m{i}" for i in range(5)])
        first = wait_until(lambda: self.receive(transport, max_messages=2), what="a batch")
        assert 1 <= len(first) <= 2
        rest = self.receive_n(transport, 5 - len(first))
        assert {d.body for d in first + rest} == {f"m{i}".encode() for i in range(5)}

    def test_receive_waits_then_returns_empty(self, transport: Transport) -> None:
        started = time.monotonic()
        got = transport.receive([self.q()], max_messages=1, wait=timedelta(seconds=0.3), lease=LONG)
        assert got == []
        assert time.monotonic() - started >= 0.25

    def test_receive_wakes_when_a_message_is_sent_while_waiting(self, transport: Transport) -> None:
        other = transport.clone()

        def send_later() -> None:
            time.sleep(0.2)  # the point: send only once the receive below is waiting
            self.send(other, [b"x"])

        sender = threading.Thread(target=send_later)
        sender.start()
        try:
            got = transport.receive(
                [self.q()], max_messages=1, wait=timedelta(seconds=30), lease=LONG
            )
            assert [d.body for d in got] == [b"x"]
        finally:
            sender.join()
            if other is not transport:
                other.close()

    def test_message_sent_twice_is_delivered_twice(self, transport: Transport) -> None:
        message = Message(queue=self.q(), body=b"dup", id="same-id")
        transport.send([message])
        transport.send([message])
        got = self.receive_n(transport, 2)
        assert [d.id for d in got] == ["same-id", "same-id"]
        assert got[0].receipt != got[1].receipt

    def test_queues_are_isolated(self, transport: Transport) -> None:
        self.send(transport, [b"a"], queue=self.q("a"))
        self.send(transport, [b"b"], queue=self.q("b"))
        (got,) = self.receive_n(transport, 1, queues=[self.q("b")])
        assert got.body == b"b"
        assert self.receive(transport, queues=[self.q("b")]) == []

    def test_receive_from_several_queues(self, transport: Transport) -> None:
        self.send(transport, [b"a"], queue=self.q("a"))
        self.send(transport, [b"b"], queue=self.q("b"))
        got = self.receive_n(transport, 2, queues=[self.q("a"), self.q("b")])
        assert {(d.queue, d.body) for d in got} == {(self.q("a"), b"a"), (self.q("b"), b"b")}

    def test_oldest_first_within_a_priority(self, transport: Transport) -> None:
        for i in range(5):
            self.send(transport, [f"m{i}"])
        got = [d.body for d in self.receive_n(transport, 5)]
        expected = [f"m{i}".encode() for i in range(5)]
        assert got == expected if self.ordered else sorted(got) == expected

    def test_priority_higher_first_then_fifo(self, transport: Transport) -> None:
        levels = transport.capabilities.priorities
        self.send(transport, [b"low-1"], priority=0)
        self.send(transport, [b"high-1"], priority=levels - 1)
        self.send(transport, [b"mid"], priority=min(5, levels - 1))
        self.send(transport, [b"high-2"], priority=levels - 1)
        self.send(transport, [b"low-2"], priority=0)
        got = [d.body for d in self.receive_n(transport, 5)]
        if levels > 1 and self.ordered:
            assert got == [b"high-1", b"high-2", b"mid", b"low-1", b"low-2"]
        else:
            assert sorted(got) == sorted([b"low-1", b"high-1", b"mid", b"high-2", b"low-2"])

    def test_delayed_send_is_not_delivered_before_due(self, transport: Transport) -> None:
        due = self.now() + self.short
        self.send(transport, [b"later"], delay=self.short)
        self.assert_nothing_due_before(transport, due)
        self.lapse(self.short)
        (got,) = self.receive_n(transport, 1)
        assert got.body == b"later"
        assert got.deliveries == 1

    # -- ack ---------------------------------------------------------------------------------

    def test_ack_removes_message(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (delivery,) = self.receive_n(transport, 1, lease=self.short)
        transport.ack([delivery])
        self.lapse(self.short * 1.5)
        assert self.receive(transport) == []
        stats = self.stats_of(transport, self.q())
        assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)

    def test_ack_batch_removes_every_message(self, transport: Transport) -> None:
        self.send(transport, [f"m{i}" for i in range(10)])
        got = self.receive_n(transport, 10, lease=self.short)
        transport.ack(got)
        self.lapse(self.short * 1.5)
        assert self.receive(transport) == []

    def test_ack_is_idempotent(self, transport: Transport) -> None:
        self.send(transport, [b"a", b"b"])
        first, second = self.receive_n(transport, 2)
        transport.ack([first])
        transport.ack([first])
        transport.ack([first, second])
        stats = self.stats_of(transport, self.q())
        assert (stats.ready, stats.in_flight) == (0, 0)

    # -- release -----------------------------------------------------------------------------

    def test_release_makes_message_deliverable_again_with_incremented_count(
        self, transport: Transport
    ) -> None:
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1)
        transport.release(first)
        (second,) = self.receive_n(transport, 1)
        assert (second.id, second.body) == (first.id, first.body)
        assert second.deliveries == first.deliveries + 1
        assert second.receipt != first.receipt

    def test_release_with_delay_hides_message_until_due(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1)
        due = self.now() + self.short
        transport.release(first, delay=self.short)
        self.assert_nothing_due_before(transport, due)
        stats = self.stats_of(transport, self.q())
        if self.now() < due:
            assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 1)
        self.lapse(self.short)
        (second,) = self.receive_n(transport, 1)
        assert second.deliveries == 2

    def test_release_is_idempotent(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1)
        transport.release(first)
        transport.release(first)
        (second,) = self.receive_n(transport, 1)
        assert self.receive(transport) == []
        assert second.deliveries == 2

    def test_release_uncounted_redelivers_with_the_same_count(self, transport: Transport) -> None:
        self.send(transport, [b'{"attempt":0}'])
        (first,) = self.receive_n(transport, 1)
        transport.release_uncounted(first)
        (second,) = self.receive_n(transport, 1)
        assert second.id == first.id
        attempt = json.loads(second.body)["attempt"]
        assert attempt + second.deliveries == 0 + first.deliveries  # no attempt used
        assert self.receive(transport) == []

    def test_release_uncounted_with_delay_hides_message_until_due(
        self, transport: Transport
    ) -> None:
        self.send(transport, [b'{"attempt":2}'])
        (first,) = self.receive_n(transport, 1)
        due = self.now() + self.short
        transport.release_uncounted(first, delay=self.short)
        self.assert_nothing_due_before(transport, due)
        self.lapse(self.short)
        (second,) = self.receive_n(transport, 1)
        assert json.loads(second.body)["attempt"] + second.deliveries == 2 + 1

    def test_peek_shows_waiting_bodies_and_uses_no_delivery(self, transport: Transport) -> None:
        self.send(transport, [b'{"attempt":0,"job":"a"}', b'{"attempt":0,"job":"b"}'])
        seen = transport.peek([self.q()])  # best effort: may see only some, or none
        assert {json.loads(body)["job"] for body in seen} <= {"a", "b"}
        for delivery in self.receive_n(transport, 2):
            assert json.loads(delivery.body)["attempt"] + delivery.deliveries == 1

    # -- leases ------------------------------------------------------------------------------

    def test_expired_lease_redelivers_with_incremented_count(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (first,) = self.receive_n(transport, 1, lease=self.short)
        self.lapse(self.short * 1.5)
        (second,) = self.receive_n(transport, 1)
        assert (second.id, second.body) == (first.id, b"a")
        assert second.deliveries == 2

    def test_extend_keeps_message_invisible_past_original_lease(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (delivery,) = self.receive_n(transport, 1, lease=self.short)
        transport.extend(delivery, lease=LONG)
        self.lapse(self.short * 1.5)
        assert self.receive(transport) == []
        assert self.stats_of(transport, self.q()).in_flight == 1

    def test_extend_after_ack_is_a_no_op(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (delivery,) = self.receive_n(transport, 1)
        transport.ack([delivery])
        transport.extend(delivery, lease=LONG)
        stats = self.stats_of(transport, self.q())
        assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)

    # -- dead letters ------------------------------------------------------------------------
