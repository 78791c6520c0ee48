"""Each checker on hand-written histories: one that must pass, and the anomaly it must catch."""

from __future__ import annotations

from jobkit_conformance import checkers
from jobkit_conformance.history import F, History, OpType

from jobkit.spi import Envelope

from .histories import H


def _dead_entry(
    job_id: str, job: str = "conformance.always_fail", args: tuple[str, ...] = ()
) -> dict[str, str]:
    body = Envelope(id=job_id, job=job, args=args or (job_id,)).encode()
    return {"id": job_id, "reason": "exhausted", "body_hex": body.hex()}


def test_no_loss_passes_when_every_job_succeeded_or_is_dead() -> None:
    h = H().enqueue("a").enqueue("b", outcome="dead").run("a", 1, 2).run("b", 1, 2, OpType.FAIL)
    h.dead(5, _dead_entry("b"))
    assert checkers.no_loss(h.build()).passed


def test_no_loss_counts_a_job_that_never_succeeded_and_is_not_dead() -> None:
    h = H().enqueue("a").enqueue("b").run("a", 1, 2).run("b", 1, None)
    finding = checkers.no_loss(h.build())
    assert not finding.passed
    assert finding.counts["lost"] == 1
    assert "job b" in finding.summary


def test_no_loss_ignores_an_enqueue_that_failed() -> None:
    h = H().enqueue("a", ok=OpType.FAIL).enqueue("b").run("b", 1, 2)
    finding = checkers.no_loss(h.build())
    assert finding.passed
    assert finding.counts["jobs"] == 1


def test_no_loss_fails_when_there_is_nothing_to_account_for() -> None:
    assert not checkers.no_loss(H().build()).passed


def test_no_unexpected_flags_a_run_of_a_job_whose_enqueue_failed() -> None:
    h = H().enqueue("a", ok=OpType.FAIL).run("a", 1, 2)
    finding = checkers.no_unexpected(h.build())
    assert not finding.passed
    assert finding.counts["unexpected"] == 1


def test_no_unexpected_flags_a_job_nobody_enqueued() -> None:
    h = H().enqueue("a").run("a", 1, 2).run("ghost", 1, 2)
    assert "ghost" in checkers.no_unexpected(h.build()).summary


def test_no_unexpected_accepts_an_indeterminate_enqueue_and_injected_messages() -> None:
    h = H().enqueue("a", ok=OpType.UNKNOWN).run("a", 1, 2)
    h.op("nemesis", OpType.OK, F.INJECT, 1, "raw").dead(
        3, {"id": "raw", "reason": "bad", "body_hex": "ff"}
    )
    assert checkers.no_unexpected(h.build()).passed


def test_no_duplicate_runs_catches_a_second_start_without_a_fault() -> None:
    ok = H().enqueue("a").run("a", 1, 2)
    assert checkers.no_duplicate_runs(ok.build()).passed
    dup = H().enqueue("a").run("a", 1, 2).run("a", 1.1, 2.1, pid=2)
    finding = checkers.no_duplicate_runs(dup.build())
    assert not finding.passed
    assert finding.counts["duplicated"] == 1


def test_effect_once_per_key_catches_a_duplicate_effect() -> None:
    h = H().enqueue("a", key="k").enqueue("b", key="k", outcome="skip")
    h.run("a", 1, 2, effect=True, key="k")
    assert checkers.effect_once_per_key(h.build()).passed
    h.run("b", 3, 4, effect=True, key="k")
    finding = checkers.effect_once_per_key(h.build())
    assert not finding.passed
    assert "key k took effect 2 times" in finding.summary


def test_effect_once_per_key_catches_a_key_that_never_took_effect() -> None:
    h = H().enqueue("a", key="k")
    assert "never took effect" in checkers.effect_once_per_key(h.build()).summary


def test_recovered_measures_the_time_from_kill_to_the_next_start() -> None:
    h = H().enqueue("a").run("a", 1, None, seen=1.5).nemesis(F.KILL, 2).run("a", 4.5, 6, pid=2)
    finding = checkers.recovered(h.build())
    assert finding.passed
    assert finding.counts["recovery_max_s"] == 2.5


def test_recovered_fails_when_the_killed_job_never_starts_again() -> None:
    h = H().enqueue("a").run("a", 1, None).nemesis(F.KILL, 2)
    finding = checkers.recovered(h.build())
    assert not finding.passed
    assert "never started again" in finding.summary


def test_recovered_fails_when_the_fault_interrupted_nothing() -> None:
    h = H().enqueue("a").run("a", 1, 2).nemesis(F.KILL, 3)
    assert "did not exercise" in checkers.recovered(h.build()).summary


def test_redelivered_while_stopped_needs_a_start_between_stop_and_cont() -> None:
    base = H().enqueue("a").run("a", 1, 9).nemesis(F.STOP, 2)
    taken = H().enqueue("a").run("a", 1, 9).nemesis(F.STOP, 2).run("a", 4, 8, pid=2)
    assert checkers.redelivered_while_stopped(taken.nemesis(F.CONT, 5).build()).passed
    assert not checkers.redelivered_while_stopped(base.nemesis(F.CONT, 5).build()).passed


def test_attempts_within_policy_catches_attempts_beyond_max_and_resets_on_replay() -> None:
    h = H().enqueue("a", max_attempts=2, outcome="dead").run("a", 1, 2, OpType.FAIL)
    h.run("a", 3, 4, OpType.FAIL).op("client", OpType.OK, F.REPLAY, 5, ids=["a"], count=1)
    h.run("a", 6, 7, OpType.FAIL).run("a", 8, 9, OpType.FAIL)
    assert checkers.attempts_within_policy(h.build()).passed
    h.run("a", 10, 11, OpType.FAIL)
    finding = checkers.attempts_within_policy(h.build())
    assert not finding.passed
    assert finding.counts["beyond_policy"] == 1


def test_exhausted_exactly_wants_max_attempts_for_an_always_failing_job() -> None:
    h = H().enqueue("a", kind="always_fail", max_attempts=3, outcome="dead")
    h.run("a", 1, 2, OpType.FAIL).run("a", 3, 4, OpType.FAIL)
    assert not checkers.exhausted_exactly(h.build()).passed
    h.run("a", 5, 6, OpType.FAIL)
    assert checkers.exhausted_exactly(h.build()).passed


def test_exhausted_exactly_ignores_a_replayed_run_started_during_the_replay() -> None:
    h = H().enqueue("a", kind="always_fail", max_attempts=2, outcome="dead")
    h.run("a", 1, 2, OpType.FAIL).run("a", 3, 4, OpType.FAIL)
    h.run("a", 5.1, 5.2, OpType.FAIL)  # the replayed copy, started while replay() ran
    h.op("client", OpType.OK, F.REPLAY, 5.5, ids=["a"], count=1, invoked_at=5.0)
    assert checkers.exhausted_exactly(h.build()).passed


def test_succeeds_after_transient_wants_success_at_attempt_n_plus_one() -> None:
    h = H().enqueue("a", kind="flaky", failures=1).run("a", 1, 2, OpType.FAIL).run("a", 3, 4)
    assert checkers.succeeds_after_transient(h.build()).passed
    never = H().enqueue("a", kind="flaky", failures=1).run("a", 1, 2, OpType.FAIL)
    assert not checkers.succeeds_after_transient(never.build()).passed


def test_backoff_lower_bound_catches_a_retry_that_came_too_early() -> None:
    ok = H().enqueue("a", backoff_min=(0.5,)).run("a", 1, 2, OpType.FAIL).run("a", 2.6, 3)
    assert checkers.backoff_lower_bound(ok.build()).passed
    early = H().enqueue("a", backoff_min=(0.5,)).run("a", 1, 2, OpType.FAIL).run("a", 2.1, 3)
    finding = checkers.backoff_lower_bound(early.build())
    assert not finding.passed
    assert "lower bound is 0.500 s" in finding.summary


def test_permanent_not_retried_catches_a_second_run_of_a_rejected_job() -> None:
    h = H().enqueue("a", permanent=True, outcome="dead").run("a", 1, 2, OpType.FAIL)
    h.dead(3, _dead_entry("a"))
    assert checkers.permanent_not_retried(h.build()).passed
    h.run("a", 4, 5, OpType.FAIL)
    assert "ran 2 times" in checkers.permanent_not_retried(h.build()).summary


def test_dead_after_exhaustion_catches_a_job_missing_from_the_dlq() -> None:
    h = H().enqueue("a", outcome="dead").run("a", 1, 2, OpType.FAIL)
    assert not checkers.dead_after_exhaustion(h.build()).passed
    h.dead(3, _dead_entry("a"))
    assert checkers.dead_after_exhaustion(h.build()).passed


def test_dead_letters_intact_catches_a_changed_body() -> None:
    h = H().enqueue("a", job="conformance.always_fail", args=("a",), outcome="dead")
    assert checkers.dead_letters_intact(H().build()).passed is False
    good = History(h.build().ops)
    good.add(H().dead(3, _dead_entry("a")).build().ops[0])
    assert checkers.dead_letters_intact(good).passed
    bad = History(h.build().ops)
    bad.add(H().dead(3, _dead_entry("a", args=("other",))).build().ops[0])
    assert "envelope changed" in checkers.dead_letters_intact(bad).summary


def test_replayed_wants_a_run_after_the_replay() -> None:
    h = (
        H()
        .enqueue("a")
        .run("a", 1, 2, OpType.FAIL)
        .op("client", OpType.OK, F.REPLAY, 3, ids=["a"], count=1)
    )
    assert not checkers.replayed(h.build()).passed
    h.run("a", 4, 5)
    assert checkers.replayed(h.build()).passed


def test_time_limit_enforced_catches_a_job_that_kept_running() -> None:
    spec = {"time_limit": 1.0, "max_attempts": 1, "outcome": "dead"}
    stopped = H().enqueue("a", **spec).run("a", 1, None, seen=2.0).dead(5, _dead_entry("a"))
    assert checkers.time_limit_enforced(stopped.build()).passed
    ran_on = H().enqueue("a", **spec).run("a", 1, None, seen=9.0).dead(10, _dead_entry("a"))
    assert "still running" in checkers.time_limit_enforced(ran_on.build()).summary


def test_time_limit_enforced_gives_a_stubborn_job_the_declared_margin_only() -> None:
    spec = {"kind": "stubborn", "time_limit": 1.0, "max_attempts": 1, "outcome": "dead"}

    def killed_after(seen: float, margin: float) -> H:
        h = H().op("harness", OpType.OK, F.CLAIM, 0.0, time_limit_margin_s=margin)
        return h.enqueue("a", **spec).run("a", 1, None, seen=seen).dead(9, _dead_entry("a"))

    assert checkers.time_limit_enforced(killed_after(6.5, margin=5.0).build()).passed
    assert not checkers.time_limit_enforced(killed_after(6.5, margin=0.0).build()).passed
    limited = {**spec, "kind": "limited"}  # a job that stops when asked gets no margin
    h = H().op("harness", OpType.OK, F.CLAIM, 0.0, time_limit_margin_s=5.0)
    h.enqueue("a", **limited).run("a", 1, None, seen=6.5).dead(9, _dead_entry("a"))
    assert "must be stopped" in checkers.time_limit_enforced(h.build()).summary


def test_started_once_catches_a_long_job_started_twice() -> None:
    h = H().enqueue("a", kind="long").run("a", 1, 7)
    assert checkers.started_once(h.build(), ("long",)).passed
    h.run("a", 3, 9, pid=2)
    assert not checkers.started_once(h.build(), ("long",)).passed


def test_not_before_catches_an_early_start() -> None:
    assert checkers.not_before(H().enqueue("a", not_before=5.0).run("a", 5.01, 6).build()).passed
    finding = checkers.not_before(H().enqueue("a", not_before=5.0).run("a", 3, 4).build())
    assert not finding.passed
    assert finding.counts["early_s"] == 2.0


def test_priority_order_counts_inversions() -> None:
    good = H().enqueue("a", priority=9).enqueue("b", priority=1).run("a", 1, 2).run("b", 3, 4)
    assert checkers.priority_order(good.build()).passed
    bad = H().enqueue("a", priority=9).enqueue("b", priority=1).run("b", 1, 2).run("a", 3, 4)
    assert checkers.priority_order(bad.build()).counts["inversions"] == 1


def test_in_flight_finished_catches_a_job_cut_off_by_sigterm() -> None:
    ok = H().enqueue("a").run("a", 1, 3).nemesis(F.TERM, 2)
    assert checkers.in_flight_finished(ok.build()).passed
    cut = H().enqueue("a").run("a", 1, None, seen=2.1).nemesis(F.TERM, 2)
    assert not checkers.in_flight_finished(cut.build()).passed


def test_poison_handled_wants_the_bytes_in_the_dlq_and_the_worker_alive() -> None:
    def history(alive: bool, in_dlq: bool) -> History:
        h = H().op("nemesis", OpType.OK, F.INJECT, 1, "raw", body_hex="ff00")
        h.enqueue("a", t=1.5).run("a", 2, 3)
        h.dead(4, *([{"id": "raw", "reason": "undecodable", "body_hex": "ff00"}] if in_dlq else []))
        return h.op("probe", OpType.OK, F.WORKER, 4, alive=alive).build()

    assert checkers.poison_handled(history(alive=True, in_dlq=True)).passed
    assert not checkers.poison_handled(history(alive=False, in_dlq=True)).passed
    assert not checkers.poison_handled(history(alive=True, in_dlq=False)).passed


def test_enqueue_refused_wants_the_named_error_and_nothing_sent() -> None:
    h = H().op("client", OpType.INVOKE, F.ENQUEUE, 0, "a", kind="refused", outcome="skip")
    refused = H().build()
    refused.extend(h.build().ops)
    refused.add(
        H().op("client", OpType.FAIL, F.ENQUEUE, 1, "a", error="BrokerUnavailable").build().ops[0]
    )
    assert checkers.enqueue_refused(refused, error="BrokerUnavailable").passed
    assert not checkers.enqueue_refused(refused, error="UnsupportedFeature").passed
    accepted = H().enqueue("a", kind="refused", outcome="skip").build()
    assert "succeeded" in checkers.enqueue_refused(accepted, error="BrokerUnavailable").summary


def test_history_round_trips_through_jsonl() -> None:
    h = H().enqueue("a", key="k").run("a", 1, 2, effect=True, key="k").build()
    assert History.from_jsonl(h.to_jsonl()).ops == h.ops


def test_no_duplicate_runs_compares_the_broker_depth_with_what_was_enqueued() -> None:
    h = H().enqueue("a").op("probe", OpType.OK, F.DEPTH, 0.5, depth=2, expected=1).run("a", 1, 2)
    assert "the broker holds 2 messages" in checkers.no_duplicate_runs(h.build()).summary


def test_dead_letters_intact_catches_a_job_dead_lettered_twice() -> None:
    h = H().enqueue("a", job="conformance.always_fail", args=("a",), outcome="dead")
    h.dead(3, _dead_entry("a"), _dead_entry("a"))
    assert "2 times" in checkers.dead_letters_intact(h.build()).summary


def test_not_before_fails_a_delayed_job_that_never_ran_or_ran_far_too_late() -> None:
    never = checkers.not_before(H().enqueue("a", not_before=5.0).build())
    assert "never ran" in never.summary
    late = checkers.not_before(H().enqueue("a", not_before=5.0).run("a", 60, 61).build())
    assert "after its due time" in late.summary


def test_not_before_allows_a_late_start_what_an_undelayed_job_took_then() -> None:
    h = H().enqueue("a", not_before=5.0).run("a", 17.0, 17.1)
    h.enqueue("p", t=4.5, kind="pulse").run("p", 16.9, 17.0, pid=2)  # 12.4 s to start
    assert checkers.not_before(h.build()).passed
    prompt = H().enqueue("a", not_before=5.0).run("a", 17.0, 17.1)
    prompt.enqueue("p", t=4.5, kind="pulse").run("p", 4.6, 4.7, pid=2)
    summary = checkers.not_before(prompt.build()).summary
    assert "started 12.0 s after its due time (the limit is 10 s + 0.1 s" in summary
