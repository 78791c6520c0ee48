"""The durability, outage and contract checkers on hand-written histories: each passes what it
must and names what it observed when it fails."""

from __future__ import annotations

from jobkit_conformance import checkers
from jobkit_conformance.history import F, OpType

from .histories import H


def _killed_producer(h: H, t: float = 1.0) -> H:
    h.nemesis(F.PRODUCER, t, pid=42, code=-9)
    return h.op("probe", OpType.OK, F.DEPTH, t + 0.1, queue="q", depth=1)


def test_producer_killed_passes_when_every_reported_job_ran() -> None:
    h = _killed_producer(H().enqueue("a", kind="produced").enqueue("b", kind="produced"))
    h.run("a", 2, 3).run("b", 2, 3)
    assert checkers.producer_killed_no_loss(h.build()).passed


def test_producer_killed_names_a_reported_job_that_never_ran_and_what_the_broker_held() -> None:
    h = _killed_producer(H().enqueue("a", kind="produced").enqueue("b", kind="produced"))
    h.run("a", 2, 3)
    finding = checkers.producer_killed_no_loss(h.build())
    assert not finding.passed
    assert "job b" in finding.summary
    assert "not durable when enqueue returned" in finding.summary
    assert "the broker held 1" in finding.summary


def test_producer_killed_ignores_a_job_whose_enqueue_never_returned() -> None:
    h = H().enqueue("a", kind="produced").enqueue("b", kind="produced", ok=OpType.UNKNOWN)
    h = _killed_producer(h)
    h.run("a", 2, 3)
    assert checkers.producer_killed_no_loss(h.build()).passed


def test_producer_killed_fails_when_no_producer_was_killed() -> None:
    h = H().enqueue("a", kind="produced").run("a", 2, 3)
    assert "no producer was killed" in checkers.producer_killed_no_loss(h.build()).summary


def _restart(h: H, stop: float = 1.0) -> H:
    h.op("nemesis", OpType.INVOKE, F.BROKER_STOP, stop)
    h.op("nemesis", OpType.OK, F.BROKER_STOP, stop + 0.5)
    h.op("nemesis", OpType.INVOKE, F.BROKER_START, stop + 0.6)
    return h.op("nemesis", OpType.OK, F.BROKER_START, stop + 1)


def test_restart_passes_when_everything_enqueued_before_it_ran() -> None:
    h = _restart(H().enqueue("a", kind="restart")).run("a", 3, 4)
    assert checkers.restart_no_loss(h.build()).passed


def test_restart_names_what_was_lost_and_the_depths_around_it() -> None:
    h = H().enqueue("a", kind="restart").enqueue("b", kind="restart")
    h.op("probe", OpType.OK, F.DEPTH, 0.5, queue="q", depth=2, before_restart=True)
    _restart(h)
    h.op("probe", OpType.OK, F.DEPTH, 2.5, queue="q", depth=0, restarted=True)
    h.run("a", 3, 4)
    finding = checkers.restart_no_loss(h.build())
    assert not finding.passed
    assert "job b (restart) was enqueued before the broker restart" in finding.summary
    assert "held 2 message(s) before the restart and 0 after it" in finding.summary


def test_restart_fails_when_the_broker_was_not_restarted() -> None:
    h = H().enqueue("a", kind="restart").run("a", 3, 4)
    assert not checkers.restart_no_loss(h.build()).passed


def _outage(h: H, *, alive: bool) -> H:
    _restart(h, stop=2.0)
    return h.op("probe", OpType.OK, F.WORKER, 9, name="outage-0", pid=7, alive=alive, outage=True)


def test_outage_passes_when_the_worker_lives_and_runs_a_later_job() -> None:
    h = H().enqueue("a", kind="outage").enqueue("z", t=4, kind="after_outage")
    h = _outage(h.run("a", 1, 5).run("z", 5, 6), alive=True)
    assert checkers.outage_worker_survives(h.build()).passed
    assert checkers.outage_no_loss(h.build()).passed


def test_outage_names_a_worker_that_exited() -> None:
    h = H().enqueue("z", t=4, kind="after_outage").run("z", 5, 6)
    finding = checkers.outage_worker_survives(_outage(h, alive=False).build())
    assert not finding.passed
    assert "worker outage-0 (pid 7) exited" in finding.summary


def test_outage_says_an_enqueue_during_it_was_dropped() -> None:
    h = H().enqueue("a", kind="outage").enqueue("d", t=2.5, kind="during_outage")
    finding = checkers.outage_no_loss(_outage(h.run("a", 1, 5), alive=True).build())
    assert not finding.passed
    assert "enqueue returned while the broker was stopped" in finding.summary


def test_outage_accepts_an_enqueue_refused_during_it() -> None:
    h = H().enqueue("a", kind="outage").enqueue("d", t=2.5, kind="during_outage", ok=OpType.FAIL)
    assert checkers.outage_no_loss(_outage(h.run("a", 1, 5), alive=True).build()).passed


def test_observed_reports_each_broken_promise_with_what_was_seen() -> None:
    h = H()
    h.op("client", OpType.OK, F.OBSERVE, 1, promise="receive.wait", ok=True, observed="fine")
    h.op("client", OpType.OK, F.OBSERVE, 2, promise="receive.wait", ok=False,
         observed="receive(wait=1.5 s) returned after 0.00 s")  # fmt: skip
    finding = checkers.observed(h.build(), ("receive.wait",))
    assert not finding.passed
    assert "receive.wait: receive(wait=1.5 s) returned after 0.00 s" in finding.summary
    assert finding.counts == {"observations": 2, "broken": 1}


def test_observed_fails_when_nothing_was_observed() -> None:
    finding = checkers.observed(H().build(), ("receive.wait",))
    assert not finding.passed
    assert "no observation" in finding.summary
