"""Contract tests: dead letters, replay, purge, stats, capabilities."""

from __future__ import annotations

from jobkit.spi import Envelope, QueueStats, Transport, decode
from tests.transport_contract._base import LONG, ContractBase
from tests.waiting import wait_until


class DeadLetterTests(ContractBase):
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
