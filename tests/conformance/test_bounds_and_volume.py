"""The bound and volume checkers on hand-written histories: what passes, what they catch, and
that each failure names what was observed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jobkit_celery import CeleryBackend
from jobkit_celery._settings import parse_url as celery_settings
from jobkit_conformance import checkers, config, reports
from jobkit_conformance.checkers.bounds import percentiles
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.outcome import CheckOutcome, Outcome, RunResult, capability_verdicts
from jobkit_sqs import parse_url
from jobkit_sqs.transport import capabilities_for
from rich.console import Console

from jobkit import ConfigurationError
from jobkit.spi import Capabilities

from .histories import H

CLAIM = {
    "backend": "testbroker",
    "lease_s": 2.0,
    "poll_s": 0.2,
    "redelivery_bound_s": 2.2,
    "scheduling_precision_s": 0.2,
    "delay_rounding": 0.0,
}


def _claimed(h: H, **overrides: float) -> H:
    return h.op("harness", OpType.OK, F.CLAIM, 0.0, **{**CLAIM, **overrides})


def test_redelivery_bound_is_the_lease_or_the_fixed_timeout_plus_the_precision() -> None:
    lease = timedelta(seconds=2)
    caps = Capabilities(name="x", scheduling_precision=timedelta(seconds=0.5))
    assert caps.redelivery_bound(lease) == timedelta(seconds=2.5)
    fixed = Capabilities(name="x", redelivery_after=timedelta(seconds=5))
    assert fixed.redelivery_bound(lease) == timedelta(seconds=6)


def test_due_bound_adds_the_share_of_a_rounded_up_delay() -> None:
    caps = Capabilities(name="x", scheduling_precision=timedelta(seconds=1), delay_rounding=0.1)
    assert caps.due_bound(timedelta(minutes=10)) == timedelta(seconds=61)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentiles(values, "x") == {"x_p50_s": 50.0, "x_p99_s": 99.0, "x_max_s": 100.0}


def _crash(restart: float) -> History:
    h = _claimed(H().enqueue("a")).run("a", 1.0, None, seen=1.5)
    h.nemesis(F.KILL, 2.0, worker="crash-0")
    return h.run("a", restart, restart + 1, pid=2).build()


def test_a_killed_job_rerun_within_the_bound_passes_and_reports_recovery() -> None:
    finding = checkers.redelivered_within_bound(_crash(restart=4.5))
    assert finding.passed, finding.summary
    assert finding.counts["recovery_max_s"] == 2.5
    assert finding.counts["bound_s"] == 2.2 + 0.2 + 3.0


def test_a_killed_job_rerun_ten_leases_later_fails_naming_the_recovery_and_bound() -> None:
    finding = checkers.redelivered_within_bound(_crash(restart=22.0))
    assert not finding.passed
    assert "ran again 20.00 s after a SIGKILL" in finding.summary
    assert "testbroker declares redelivery within 2.2 s for a 2 s lease" in finding.summary


def test_recovery_counts_from_when_the_replacement_worker_was_polling() -> None:
    h = _claimed(H().enqueue("a")).run("a", 1.0, None).nemesis(F.KILL, 2.0)
    h.enqueue("r", t=3.0, kind="ready").run("r", 8.0, 8.1, pid=2)  # slow start-up
    finding = checkers.redelivered_within_bound(h.run("a", 8.2, 9.0, pid=2).build())
    assert finding.passed
    assert finding.counts["recovery_max_s"] == 0.2


def test_a_killed_job_never_rerun_fails_naming_the_target() -> None:
    h = _claimed(H().enqueue("a")).run("a", 1.0, None)
    h.nemesis(F.KILL, 2.0, target="its job process")
    finding = checkers.redelivered_within_bound(h.build())
    assert not finding.passed
    assert "SIGKILL of its job process and never ran again" in finding.summary


def test_recovery_without_a_declared_claim_fails() -> None:
    h = H().enqueue("a").run("a", 1.0, None).nemesis(F.KILL, 2.0).run("a", 3, 4)
    assert "no declared bounds" in checkers.redelivered_within_bound(h.build()).summary


def test_delayed_jobs_within_the_precision_pass_and_report_lateness() -> None:
    h = _claimed(H().enqueue("a", not_before=2.0).enqueue("b", not_before=3.0))
    finding = checkers.delays_on_time(h.run("a", 2.1, 2.2).run("b", 3.3, 3.4).build())
    assert finding.passed
    assert finding.counts["lateness_max_s"] == 0.3


def test_a_delayed_job_five_seconds_late_fails_naming_its_lateness() -> None:
    h = _claimed(H().enqueue("a", not_before=2.0)).run("a", 7.0, 7.1)
    finding = checkers.delays_on_time(h.build())
    assert not finding.passed
    assert "started 5.00 s after it was due; the bound is 1.90 s" in finding.summary


def test_lateness_on_a_loaded_machine_is_allowed_what_an_undelayed_job_took_then() -> None:
    h = _claimed(H().enqueue("a", not_before=2.0)).run("a", 5.0, 5.1)
    h.enqueue("p", t=1.8, kind="pulse").run("p", 4.6, 4.7, pid=2)  # 2.8 s to start, undelayed
    finding = checkers.delays_on_time(h.build())
    assert finding.passed, finding.summary
    assert finding.counts["pickup_max_s"] == 2.8


def test_the_load_counts_the_pulses_next_to_a_window_the_loaded_producer_sent_none_in() -> None:
    h = _claimed(H().enqueue("a", not_before=5.0)).run("a", 13.0, 13.1)
    h.enqueue("p1", t=3.7, kind="pulse").run("p1", 12.9, 13.0, pid=2)  # sent before the window
    h.enqueue("p2", t=6.2, kind="pulse").run("p2", 12.95, 13.0, pid=2)  # and after it
    finding = checkers.delays_on_time(h.build())
    assert finding.passed, finding.summary
    assert finding.counts["pickup_max_s"] == 9.2


def test_prompt_pulses_around_the_due_time_leave_a_late_delayed_job_late() -> None:
    h = _claimed(H().enqueue("a", not_before=5.0)).run("a", 13.0, 13.1)
    for i, t in enumerate((2.0, 3.7, 4.5, 5.2, 6.2, 9.0)):
        h.enqueue(f"p{i}", t=t, kind="pulse").run(f"p{i}", t + 0.1, t + 0.2, pid=2)
    h.enqueue("slow", t=0.5, kind="pulse").run("slow", 12.0, 12.1, pid=2)  # two pulses before
    finding = checkers.delays_on_time(h.build())
    assert not finding.passed
    assert "started 8.00 s after it was due" in finding.summary


def test_a_due_job_may_join_the_backlog_an_undelayed_job_met_within_the_precision() -> None:
    h = _claimed(H().enqueue("a", not_before=5.0), scheduling_precision_s=3.0).run("a", 14, 14.1)
    for i, t in enumerate((4.5, 5.2, 6.0)):
        h.enqueue(f"p{i}", t=t, kind="pulse").run(f"p{i}", t + 0.1, t + 0.2, pid=2)
    h.enqueue("backlog", t=7.8, kind="pulse").run("backlog", 13.8, 13.9, pid=2)  # 6 s behind
    finding = checkers.delays_on_time(h.build())
    assert finding.passed, finding.summary
    assert finding.counts["pickup_max_s"] == 6.0


def test_a_backlog_met_only_after_the_precision_leaves_a_late_due_job_late() -> None:
    h = _claimed(H().enqueue("a", not_before=5.0), scheduling_precision_s=3.0).run("a", 14, 14.1)
    for i, t in enumerate((4.5, 5.2, 6.0, 8.0, 8.6)):
        h.enqueue(f"p{i}", t=t, kind="pulse").run(f"p{i}", t + 0.1, t + 0.2, pid=2)
    h.enqueue("backlog", t=9.5, kind="pulse").run("backlog", 13.8, 13.9, pid=2)
    finding = checkers.delays_on_time(h.build())
    assert not finding.passed
    assert "started 9.00 s after it was due; the bound is 4.80 s" in finding.summary


def test_the_lateness_bound_grows_with_a_declared_delay_rounding() -> None:
    h = _claimed(H().enqueue("a", not_before=600.0), delay_rounding=0.1).run("a", 650.0, 651.0)
    assert checkers.delays_on_time(h.build()).passed


def test_a_retry_late_after_its_longest_backoff_fails() -> None:
    h = _claimed(H().enqueue("a", kind="flaky", backoff_max=(0.2, 0.4)))
    h.run("a", 1.0, 1.1, OpType.FAIL).run("a", 1.3, 1.4, OpType.FAIL).run("a", 7.0, 7.1)
    finding = checkers.retries_on_time(h.build())
    assert not finding.passed
    assert (
        "attempt 3, due 0.4 s (the longest backoff) after attempt 2 failed, started 5.20 s "
        "after it was due" in finding.summary
    )
    assert finding.counts["lateness_max_s"] == 5.2


def test_retries_within_their_backoff_pass() -> None:
    h = _claimed(H().enqueue("a", kind="flaky", backoff_max=(0.2, 0.4)))
    h.run("a", 1.0, 1.1, OpType.FAIL).run("a", 1.25, 1.3, OpType.FAIL).run("a", 1.8, 1.9)
    finding = checkers.retries_on_time(h.build())
    assert finding.passed
    assert finding.counts["retries"] == 2


def _volume(lost: bool = False, repeat_at: float | None = None) -> History:
    h = H()
    for i in range(10):
        h.enqueue(f"j{i}", t=0.0, kind="volume")
        if not (lost and i == 3):
            h.run(f"j{i}", 1.0 + i / 10, 1.05 + i / 10)
    h.nemesis(F.KILL, 1.4, worker="w1")
    if repeat_at is not None:
        h.enqueue("late", t=2.0, kind="volume").run("late", 2.1, 2.2).run("late", repeat_at, 3.1)
    return h.build()


def test_volume_without_loss_passes_and_reports_throughput() -> None:
    finding = checkers.volume_no_loss(_volume())
    assert finding.passed
    assert finding.counts["lost"] == 0
    assert finding.counts["throughput_jobs_s"] > 0


def test_volume_counts_a_lost_job_and_says_how_many_of_how_many() -> None:
    finding = checkers.volume_no_loss(_volume(lost=True))
    assert not finding.passed
    assert finding.summary.startswith("1 lost: 1 of 10 jobs lost (1 never ran")
    assert (
        "job j3 was enqueued but never succeeded: never ran; the jobs sent next to it started "
        "0.00 s from the KILL of worker w1: it was most likely in that worker's hands"
        in finding.summary
    )


def test_volume_duplicates_after_a_fault_are_explained() -> None:
    h = H().enqueue("a", kind="volume").run("a", 1.0, 1.1).nemesis(F.KILL, 1.2)
    finding = checkers.volume_duplicates_explained(h.run("a", 4.0, 4.1, pid=2).build())
    assert finding.passed
    assert finding.counts["duplicated"] == 1


def test_volume_duplicates_with_no_fault_since_enqueue_fail_beyond_one_percent() -> None:
    finding = checkers.volume_duplicates_explained(_volume(repeat_at=3.0))
    assert not finding.passed  # 1 of 11 jobs
    assert "1 of 11 jobs ran again with no fault since their enqueue (at most 0 allowed)" in (
        finding.summary
    )
    assert "job late ran again 0.90 s after its first start with no fault" in finding.summary


def test_volume_allows_a_rare_spontaneous_duplicate() -> None:
    h = H()
    for i in range(200):
        h.enqueue(f"j{i}", t=0.0, kind="volume").run(f"j{i}", 1.0 + i / 100, 1.01 + i / 100)
    h.run("j7", 5.0, 5.1, pid=2).run("j9", 5.0, 5.1, pid=2)
    finding = checkers.volume_duplicates_explained(h.build())
    assert finding.passed
    assert "2 with no fault since the job's enqueue (at most 2 allowed)" in finding.summary
    h.run("j11", 5.0, 5.1, pid=2)
    assert not checkers.volume_duplicates_explained(h.build()).passed


def test_every_report_shows_the_measured_figures_beside_the_outcome() -> None:
    outcome = CheckOutcome(
        id="delay.on_time", capability="delay", scenario="delay", description="d",
        outcome=Outcome.PASS, summary="ok",
        counts={"delayed": 16, "lateness_p50_s": 0.01, "lateness_p99_s": 0.07,
                "lateness_max_s": 0.08},
    )  # fmt: skip
    result = RunResult(
        backend="sqlite:///x.db", backend_name="sqlite", outcomes=(outcome,),
        capabilities=tuple(capability_verdicts([outcome], {"delay": True})), duration_s=1.0,
        namespace="n",
    )  # fmt: skip
    text = "lateness p50 0.01 s, lateness p99 0.07 s, lateness max 0.08 s"
    assert f"| `delay.on_time` | **pass** | {text} |" in reports.markdown(result)
    assert 'name="delay.on_time.lateness_p99_s" value="0.07"' in reports.junit_xml(result)
    assert result.to_dict()["figures"]["delay.on_time"]["lateness_max_s"] == 0.08
    console = Console(width=200, record=True)
    reports.write_terminal(result, console)
    assert text in console.export_text()


def test_sqs_redelivery_follows_the_lease_whatever_the_queue_default() -> None:
    config = parse_url("sqs://?region=us-east-1&visibility=30")
    caps = capabilities_for(config, results=False)
    assert caps.redelivery_bound(timedelta(seconds=4)) == timedelta(seconds=6)


def test_celery_redis_redelivery_follows_the_lease() -> None:
    caps = CeleryBackend(celery_settings("celery+redis://127.0.0.1:1/0")).capabilities
    assert caps.redelivery_bound(timedelta(seconds=2)) == timedelta(seconds=4)


def test_celery_amqp_declares_the_rounding_of_its_delay_buckets() -> None:
    caps = CeleryBackend(celery_settings("celery+amqp://127.0.0.1:1//")).capabilities
    assert caps.due_bound(timedelta(minutes=10)) >= timedelta(seconds=10)  # 10 s buckets
    assert caps.due_bound(timedelta(seconds=30)) >= timedelta(seconds=1)  # 1 s buckets


def test_the_full_profile_soaks_longer_and_an_unknown_profile_is_refused() -> None:
    full = config.settings_from({"profile": "full"})
    default = config.settings_from({})
    assert full.soak.volume_jobs > default.soak.volume_jobs >= 5_000
    assert full.soak.kills > default.soak.kills
    with pytest.raises(ConfigurationError, match="unknown profile 'long'; known: default, full"):
        config.settings_from({"profile": "long"})
