"""The suite end to end, with real worker processes: it passes the real backends and fails
every deliberately broken one (tests/conformance/mutants), naming the check that catches it.

The mutants are installed by the test command (``pip install -e tests/conformance/mutants``);
each is run with the checks that must catch it plus a couple of others, to keep this short.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from jobkit_conformance.history import F, History, OpType
from jobkit_conformance.probes.sqlite import SqliteProbe

from jobkit.spi import open_backend
from tests.workers import run_conformance

pytestmark = pytest.mark.slow

MUTANTS = {
    # scheme: (the checks that catch it: at least one must fail, the checks the run is limited to)
    "mutant-acks-early": (["crash.no_loss"], ["crash", "delivery.no_loss"]),
    "mutant-no-redelivery": (["crash.redelivered"], ["crash", "delivery.no_loss"]),
    "mutant-delivers-twice": (["delivery.once_without_faults"], ["delivery", "duplicate"]),
    "mutant-ignores-delay": (["delay.not_before"], ["delay", "delivery.no_loss"]),
    "mutant-no-dlq": (["dlq.after_exhaustion"], ["dlq", "retry.permanent_not_retried"]),
    "mutant-retries-permanent": (["retry.permanent_not_retried"], ["retry", "delivery.no_loss"]),
    "mutant-ignores-time-limit": (["timeout.stopped_and_counted"], ["timeout", "delivery.no_loss"]),
    "mutant-loses-on-release": (
        ["shutdown.no_loss", "retry.transient_then_success"],
        ["shutdown", "retry.transient_then_success"],
    ),
    "mutant-no-priorities": (["priority.order"], ["priority", "delivery.no_loss"]),
    # broken backends beyond the ones the issue lists
    "mutant-no-extend": (["lease.long_job_not_duplicated"], ["lease.long", "delivery.no_loss"]),
    # the kept messages come back until the crash-loop guard dead-letters them (after 5 leases):
    # still on the queue, or succeeded jobs in the DLQ, depending on how long the run waits
    "mutant-ack-keeps": (
        ["delivery.acked_removed", "delivery.outcomes_as_specified"],
        ["delivery"],
    ),
    "mutant-dlq-mangles": (["dlq.contents_intact"], ["dlq"]),
    "mutant-no-replay": (["dlq.replay"], ["dlq"]),
    "mutant-no-delivery-count": (
        ["retry.max_attempts"],
        ["retry.max_attempts", "dlq.after_exhaustion"],
    ),
    "mutant-loses-on-send": (["delivery.no_loss"], ["delivery"]),
    "mutant-replay-twice": (["dlq.contents_intact"], ["dlq"]),
    "mutant-no-lease": (["delivery.once_without_faults"], ["delivery"]),
    "mutant-delay-never-due": (["delay.not_before"], ["delay"]),
    "mutant-store-forgets": (["duplicate.effect_once_with_key"], ["duplicate", "delivery.no_loss"]),
    # issue 10: broken backends the suite passed before (jobkit_mutants/_payloads.py)
    "mutant-js-numbers": (["payload.intact"], ["payload"]),
    "mutant-utf8mb3": (["payload.intact"], ["payload"]),
    "mutant-rounds-results": (["payload.intact"], ["payload"]),
    "mutant-dlq-one-page": (["dlq.list_complete"], ["dlq.list_complete"]),
    "mutant-purge-all": (["dlq.purge_dead_only"], ["dlq.purge_dead_only"]),
    "mutant-replay-races": (["dlq.once_per_replay"], ["dlq.once_per_replay"]),
    "mutant-drops-poison": (["poison.variants_as_policy"], ["poison.variants_as_policy"]),
    "mutant-release-counts": (["shutdown.buffered_run_once"], ["shutdown.buffered_run_once"]),
    "mutant-awaits-nothing": (["async.run_like_sync"], ["async"]),
    # passed by the suite before it counted volume, lateness and recovery time (_timing.py)
    "mutant-loses-rarely": (["volume.no_loss"], ["volume"]),
    "mutant-late-delays": (["delay.on_time", "retry.backoff_on_time"], ["delay", "retry.backoff"]),
    "mutant-slow-redelivery": (["crash.redelivered_within_bound"], ["crash.redelivered"]),
}

# What the older checks say of the newer mutants: they pass, so the new check is what catches it.
PASSED_BY_OLDER_CHECKS = {
    "mutant-late-delays": ["delay.not_before", "retry.backoff_lower_bound"],
    "mutant-slow-redelivery": ["crash.redelivered"],
}


def _run(url: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    return run_conformance(url, tmp_path, *extra, timeout=400)


def _failed(data: dict[str, Any]) -> list[str]:
    return [c["id"] for c in data.get("checks", []) if c["outcome"] in ("fail", "error", "xpass")]


def test_the_suite_passes_on_sqlite_and_cleans_up_after_itself(tmp_path: Path) -> None:
    code, data, out = _run(f"sqlite:///{tmp_path}/jobs.db", tmp_path)
    assert code == 0, out
    assert data["conformant"] is True
    assert "CONFORMANT" in out
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    for needs_control in ("durability.broker_restart", "outage.worker_survives", "outage.no_loss"):
        assert outcomes.pop(needs_control) == "not run"
    assert set(outcomes.values()) == {"pass"}
    recovery = {c["id"]: c["counts"].get("recovery_max_s") for c in data["checks"]}
    assert recovery["crash.redelivered"] is not None
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        (left,) = db.execute(
            "SELECT COUNT(*) FROM jobkit_messages WHERE queue LIKE ?", (data["namespace"] + "-%",)
        ).fetchone()
    assert left == 0


def test_the_suite_refuses_a_namespace_that_is_not_empty(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    backend = open_backend(url)
    SqliteProbe(f"{tmp_path}/jobs.db").inject_raw("taken-basic", b"someone's job", id="x")
    backend.close()
    code, _, out = _run(url, tmp_path, "--namespace", "taken")
    assert code == 2, out
    assert "not empty" in out


def test_the_suite_passes_on_memory(tmp_path: Path) -> None:
    code, data, out = _run("memory://", tmp_path)
    assert code == 0, out
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    # a worker in the broker's own process cannot stall past its lease; no broker to be down
    assert outcomes.pop("lease.expired_redelivered") == "n/a"
    assert outcomes.pop("enqueue.broker_down_raises") == "n/a"
    # no other process can reach its broker (producer, CLI), no broker process to restart
    for in_process in ("durability.producer_killed", "outage.worker_survives", "stats.counts",
                       "stats.in_flight", "backend.job_record", "backend.message_size",
                       "backend.check_close", "cli.status", "cli.dlq_list"):  # fmt: skip
        assert outcomes.pop(in_process) == "n/a", in_process
    for unclaimed in ("durability.broker_restart", "outage.no_loss"):
        assert outcomes.pop(unclaimed) == "unclaimed"
    assert set(outcomes.values()) == {"pass"}


def test_a_strict_expected_failure_that_passes_fails_the_run(tmp_path: Path) -> None:
    code, data, out = _run(
        f"sqlite:///{tmp_path}/jobs.db", tmp_path, "-k", "priority.order",
        "--history", str(tmp_path / "h.jsonl"),
        "--xfail", "priority.order=pretend our broker has no priorities",
    )  # fmt: skip
    assert code == 1, out
    assert _failed(data) == ["priority.order"]
    assert data["checks"][0]["outcome"] == "xpass"
    history = History.from_jsonl((tmp_path / "h.jsonl").read_text())
    assert len(history.select(f=F.RUN, type=OpType.INVOKE)) == 10


@pytest.fixture(scope="module")
def mutant_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[int, dict[str, Any], str]]:
    """Every mutant's run, three at a time (each is mostly waiting on its workers)."""

    def one(scheme: str) -> tuple[int, dict[str, Any], str]:
        _, only = MUTANTS[scheme]
        tmp = tmp_path_factory.mktemp(scheme)
        args = [arg for pattern in only for arg in ("-k", pattern)]
        timeout = "40" if scheme == "mutant-slow-redelivery" else "15"  # it recovers after 20 s
        return _run(f"{scheme}+sqlite:///{tmp}/jobs.db", tmp, "--timeout", timeout, *args)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(sorted(MUTANTS), pool.map(one, sorted(MUTANTS)), strict=True))


@pytest.mark.parametrize("scheme", sorted(MUTANTS))
def test_the_suite_fails_a_broken_backend_naming_the_check(
    scheme: str, mutant_runs: dict[str, tuple[int, dict[str, Any], str]]
) -> None:
    must_fail, _ = MUTANTS[scheme]
    code, data, out = mutant_runs[scheme]
    assert code == 1, out
    failed = _failed(data)
    assert set(must_fail) & set(failed), f"{scheme}: none of {must_fail} failed: {failed}\n{out}"


@pytest.mark.parametrize("scheme", sorted(PASSED_BY_OLDER_CHECKS))
def test_the_new_checks_catch_what_the_older_ones_pass(
    scheme: str, mutant_runs: dict[str, tuple[int, dict[str, Any], str]]
) -> None:
    must_fail, _ = MUTANTS[scheme]
    _, data, out = mutant_runs[scheme]
    outcomes = {c["id"]: c["outcome"] for c in data.get("checks", [])}
    assert all(outcomes[c] == "fail" for c in must_fail), out
    assert all(outcomes[c] == "pass" for c in PASSED_BY_OLDER_CHECKS[scheme]), out


def test_the_pytest_plugin_runs_the_checks_when_given_a_backend(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text("def test_app():\n    assert True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
         "--jobkit-backend", f"sqlite:///{tmp_path}/jobs.db", "--jobkit-only", "priority.order"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
