"""Behaviour every `jobkit.Transport` must show, as a base class of tests.

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

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from jobkit import DeadLetter, Delivery, Envelope, Message, QueueStats, Transport, decode
from tests.waiting import wait_until

LONG = timedelta(seconds=60)
QUEUE_NAMES = ("main", "a", "b", "listed", "never-used")
"""Every name the tests pass to `q()`; `prepare` receives them all, prefixed."""


class TransportContractCore:
    short: timedelta = timedelta(seconds=1)
    ordered: bool = True
    poll_timeout: float = 15.0

    # -- to be provided by the subclass ------------------------------------------------------

    def make_transport(self) -> Transport:
        raise NotImplementedError

    def lapse(self, delta: timedelta) -> None:
        raise NotImplementedError

    def prepare(self, transport: Transport, queues: Sequence[str]) -> None:
        """Create `queues` on brokers that need queues declared first. Default: nothing."""

    def now(self) -> datetime:
        """The transport's current time (override when the transport runs on a ManualClock)."""
        return datetime.now(UTC)

    # -- fixtures and helpers ----------------------------------------------------------------

    @pytest.fixture
    def transport(self) -> Iterator[Transport]:
        transport = self.make_transport()
        self.prepare(transport, [self.q(name) for name in QUEUE_NAMES])
        try:
            yield transport
        finally:
            transport.close()

    @pytest.fixture(autouse=True)
    def _queue_prefix(self) -> None:
        self._prefix = f"t{uuid.uuid4().hex[:10]}"

    def q(self, name: str = "main") -> str:
        return f"{self._prefix}-{name}"

    def send(
        self,
        transport: Transport,
        bodies: Sequence[bytes | str],
        *,
        queue: str | None = None,
        delay: timedelta = timedelta(0),
        priority: int = 0,
    ) -> list[str]:
        ids = []
        messages = []
        for body in bodies:
            ids.append(uuid.uuid4().hex)
            raw = body.encode() if isinstance(body, str) else body
            messages.append(
                Message(
                    queue=queue or self.q(),
                    body=raw,
                    id=ids[-1],
                    delay=delay,
                    priority=priority,
                )
            )
        transport.send(messages)
        return ids

    def receive(
        self,
        transport: Transport,
        *,
        queues: Sequence[str] | None = None,
        max_messages: int = 10,
        lease: timedelta = LONG,
    ) -> list[Delivery]:
        return transport.receive(
            list(queues or [self.q()]), max_messages=max_messages, wait=timedelta(0), lease=lease
        )

    def receive_n(
        self,
        transport: Transport,
        n: int,
        *,
        queues: Sequence[str] | None = None,
        lease: timedelta = LONG,
    ) -> list[Delivery]:
        """Receive until `n` deliveries arrived (fails after `poll_timeout` s)."""
        got: list[Delivery] = []

        def more() -> bool:
            got.extend(
                transport.receive(
                    list(queues or [self.q()]),
                    max_messages=n - len(got),
                    wait=timedelta(seconds=0.2),
                    lease=lease,
                )
            )
            return len(got) >= n

        wait_until(more, timeout=self.poll_timeout, interval=0.0, what=f"{n} deliveries")
        assert len(got) == n
        return got

    def assert_nothing_due_before(self, transport: Transport, deadline: datetime) -> None:
        """Receive once; if the transport's clock is still before `deadline` afterwards, the
        receive must have returned nothing (a stalled machine cannot make this fail)."""
        got = self.receive(transport)
        if self.now() < deadline:
            assert got == [], f"delivered before it was due: {got}"

    def stats_of(self, transport: Transport, queue: str) -> QueueStats:
        (stats,) = transport.stats([queue])
        return stats

    def dead(self, transport: Transport, queue: str | None = None) -> list[DeadLetter]:
        return transport.dead_letters(queue or self.q())

    # -- send / receive ----------------------------------------------------------------------

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

    def test_dead_letter_keeps_body_and_reason(self, transport: Transport) -> None:
        body = Envelope(job="tasks.fail", attempt=2).encode()
        (job_id,) = self.send(transport, [body])
        (delivery,) = self.receive_n(transport, 1)
        transport.dead_letter(delivery, reason="ValueError: boom")
        (dead,) = self.dead(transport)
        assert (dead.queue, dead.id, dead.body, dead.reason) == (
            self.q(),
            job_id,
            body,
            "ValueError: boom",
        )
        assert dead.deliveries == 1
        assert self.receive(transport) == []

    def test_dead_letter_is_idempotent(self, transport: Transport) -> None:
        self.send(transport, [b"a"])
        (delivery,) = self.receive_n(transport, 1)
        transport.dead_letter(delivery, reason="once")
        transport.dead_letter(delivery, reason="twice")
        assert [d.reason for d in self.dead(transport)] == ["once"]

    def test_dead_letters_are_listed_oldest_first_up_to_limit(self, transport: Transport) -> None:
        self.send(transport, [b"a", b"b", b"c"])
        got = sorted(self.receive_n(transport, 3), key=lambda d: d.body)
        for delivery in got:
            transport.dead_letter(delivery, reason=delivery.body.decode())
        listed = [d.reason for d in self.dead(transport)]
        limited = [d.reason for d in transport.dead_letters(self.q(), limit=2)]
        if self.ordered:
            assert (listed, limited) == (["a", "b", "c"], ["a", "b"])
        else:
            assert (sorted(listed), len(limited)) == (["a", "b", "c"], 2)
        assert len(self.dead(transport)) == 3  # listing does not change the queue

    def test_dead_letters_of_other_queue_are_separate(self, transport: Transport) -> None:
        self.send(transport, [b"a"], queue=self.q("a"))
        (delivery,) = self.receive_n(transport, 1, queues=[self.q("a")])
        transport.dead_letter(delivery, reason="r")
        assert self.dead(transport, self.q("b")) == []
        assert len(self.dead(transport, self.q("a"))) == 1

    def test_replay_moves_back_and_resets_attempts(self, transport: Transport) -> None:
        envelope = Envelope(job="tasks.fail", attempt=3, queue=self.q())
        self.send(transport, [envelope.encode()])
        (delivery,) = self.receive_n(transport, 1)
        transport.dead_letter(delivery, reason="boom")
        assert transport.replay(self.q()) == 1
        assert self.dead(transport) == []
        (again,) = self.receive_n(transport, 1)
        assert again.deliveries == 1
        replayed = decode(again.body)
        assert replayed.attempt == 0
        assert (replayed.id, replayed.job) == (envelope.id, envelope.job)

    def test_replay_selected_ids_only(self, transport: Transport) -> None:
        ids = self.send(transport, [b"a", b"b", b"c"])
        for delivery in self.receive_n(transport, 3):
            transport.dead_letter(delivery, reason="r")
        assert transport.replay(self.q(), ids=[ids[1]]) == 1
        assert sorted(d.id for d in self.dead(transport)) == sorted([ids[0], ids[2]])
        (again,) = self.receive_n(transport, 1)
        assert again.id == ids[1]

    def test_replay_keeps_an_undecodable_body_unchanged(self, transport: Transport) -> None:
        self.send(transport, [b"\xffnot json"])
        (delivery,) = self.receive_n(transport, 1)
        transport.dead_letter(delivery, reason="undecodable")
        assert transport.replay(self.q()) == 1
        (again,) = self.receive_n(transport, 1)
        assert again.body == b"\xffnot json"

    def test_replay_of_empty_dead_letter_queue_returns_zero(self, transport: Transport) -> None:
        assert transport.replay(self.q()) == 0

    def test_purge_deletes_dead_letters_only(self, transport: Transport) -> None:
        self.send(transport, [b"a", b"b", b"live"])
        got = self.receive_n(transport, 3)
        for delivery in got:
            if delivery.body != b"live":
                transport.dead_letter(delivery, reason="r")
            else:
                transport.release(delivery)
        assert transport.purge(self.q()) == 2
        assert self.dead(transport) == []
        (live,) = self.receive_n(transport, 1)
        assert live.body == b"live"
        assert transport.purge(self.q()) == 0

    # -- stats -------------------------------------------------------------------------------

    def test_stats_counts_ready_in_flight_delayed_and_dead(self, transport: Transport) -> None:
        self.send(transport, [b"dead", b"flight"])
        for delivery in self.receive_n(transport, 2):
            if delivery.body == b"dead":
                transport.dead_letter(delivery, reason="r")
        self.send(transport, [b"r1", b"r2", b"r3"])
        self.send(transport, [b"later"], delay=LONG)

        def expected() -> bool:
            s = self.stats_of(transport, self.q())
            return (s.ready, s.in_flight, s.delayed, s.dead) == (3, 1, 1, 1)

        wait_until(expected, timeout=self.poll_timeout, what="stats (3, 1, 1, 1)")

    def test_stats_for_unknown_queue_is_all_zero(self, transport: Transport) -> None:
        stats = self.stats_of(transport, self.q("never-used"))
        assert stats == QueueStats(
            queue=self.q("never-used"), ready=0, in_flight=0, delayed=0, dead=0
        )

    def test_stats_without_queues_lists_known_queues(self, transport: Transport) -> None:
        self.send(transport, [b"a"], queue=self.q("listed"))
        names = wait_until(
            lambda: {s.queue for s in transport.stats()} & {self.q("listed")},
            timeout=self.poll_timeout,
            what="queue listed in stats",
        )
        assert names == {self.q("listed")}

    # -- capabilities ------------------------------------------------------------------------

    def test_capabilities_are_cheap_and_stable(self, transport: Transport) -> None:
        assert transport.capabilities == transport.capabilities
        assert transport.capabilities.name


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
