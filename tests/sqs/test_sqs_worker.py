"""jobkit's worker on SQS (moto server mode), with real worker processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, JobState
from tests.apps import ledger
from tests.apps.ledger import count, rows
from tests.servers.moto import MotoServer
from tests.waiting import wait_until
from tests.workers import jobkit_cli, kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(moto: MotoServer, prefix: str, tmp_path: Path) -> str:
    return moto.url(prefix=prefix, visibility="2", store=f"sqlite:///{tmp_path / 'jobs.db'}")


def starts(path: Path, key: str) -> list[float]:
    return [float(at) for (at,) in rows(path, "SELECT at FROM runs WHERE key=? ORDER BY at", key)]  # type: ignore[arg-type]


def settled(app: App, *, dead: int) -> None:
    """Wait until the queue holds nothing but `dead` dead letters (the worker records a job's
    state before it moves the message)."""

    def done() -> bool:
        stats = app.backend.stats(["work"])[0]
        return (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, dead)

    wait_until(done, timeout=30, what=f"the queue settled with {dead} dead letters")


def test_sigkilled_workers_message_reappears_after_visibility_timeout_and_runs(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.record.enqueue("crash", 3.0)
    victim = start_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "2")
    try:
        wait_until(lambda: starts(ledger_path, "crash"), timeout=30, what="the first run")
        kill_group(victim)  # SIGKILL the worker and its job process mid-job
        victim.wait(timeout=10)
    finally:
        kill_group(victim)
    assert count(ledger_path, "SELECT COUNT(*) FROM effects") == 0
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "2"):
        wait_until(lambda: handle.state is JobState.SUCCEEDED, timeout=40, what="the re-run")
    first, second = starts(ledger_path, "crash")
    assert second - first >= 1.9  # not before the 2 s visibility timeout of the first receive
    attempts = [a for (a,) in rows(ledger_path, "SELECT attempt FROM runs ORDER BY at")]
    assert attempts == [1, 2]  # the crash counts: SQS's receive count
    assert count(ledger_path, "SELECT COUNT(*) FROM effects WHERE key='crash'") == 1


def test_long_job_is_heartbeated_and_not_redelivered_while_it_runs(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.record.enqueue("long", 6.0)  # three times the 2 s lease
    args = ("-q", "work", "-c", "1", "--lease", "2")
    with running_worker(backend, ledger_path, *args), running_worker(backend, ledger_path, *args):
        wait_until(lambda: handle.state is JobState.SUCCEEDED, timeout=40, what="the long job")
        wait_until(
            lambda: app.backend.stats(["work"])[0].in_flight == 0, timeout=10, what="the ack"
        )
    assert len(starts(ledger_path, "long")) == 1


def test_failing_job_uses_receive_counts_for_attempts_then_dead_letters(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.always_fails.enqueue("fails")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5"):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the dead letter")
        settled(app, dead=1)
    attempts = [a for (a,) in rows(ledger_path, "SELECT attempt FROM runs ORDER BY at")]
    assert attempts == [1, 2, 3, 4]
    (dead,) = app.backend.dead_letters("work")
    assert dead.id == handle.id
    assert dead.deliveries == 4
    assert "gave up after 4 of 4 attempts" in dead.reason


def test_cli_status_and_dlq_list_replay_purge_reconcile(
    app: App, backend: str, ledger_path: Path
) -> None:
    handles = [ledger.permanent.enqueue(f"p{i}") for i in range(3)]
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5"):
        wait_until(
            lambda: all(h.state is JobState.DEAD for h in handles), timeout=60, what="3 dead"
        )
        settled(app, dead=3)
    status = jobkit_cli(backend, "status", "--json")
    assert status.returncode == 0, status.stderr
    (row,) = [r for r in json.loads(status.stdout) if r["queue"] == "work"]
    assert (row["ready"], row["in_flight"], row["dead"]) == (0, 0, 3)

    listed = jobkit_cli(backend, "dlq", "list", "work", "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(r["id"] for r in json.loads(listed.stdout)) == sorted(h.id for h in handles)

    replayed = jobkit_cli(backend, "dlq", "replay", "work")
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 3" in replayed.stdout
    stats = app.backend.stats(["work"])[0]
    assert (stats.ready + stats.in_flight + stats.delayed, stats.dead) == (3, 0)

    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5"):
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs") == 6,
            timeout=60,
            what="each replayed job ran once more",
        )
        settled(app, dead=3)
    purged = jobkit_cli(backend, "dlq", "purge", "work")
    assert purged.returncode == 0, purged.stderr
    assert "purged 3 " in purged.stdout
    final = app.backend.stats(["work"])[0]
    assert (final.ready, final.in_flight, final.delayed, final.dead) == (0, 0, 0, 0)


def test_status_without_a_reachable_sqs_exits_3_without_credentials_in_output(
    tmp_path: Path,
) -> None:
    from tests.servers import free_port

    url = f"sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}&max_retries=0"
    out = jobkit_cli(url, "status")
    assert out.returncode == 3, out.stderr
    assert "unreachable" in out.stderr
    assert "testing" not in out.stderr + out.stdout  # the (fake) secret key is never printed


def test_async_job_runs_to_completion_and_its_effect_is_visible(
    app: App, backend: str, ledger_path: Path
) -> None:
    from tests.apps import async_ledger

    handle = async_ledger.arecord.enqueue("sqs-async", 0.2)
    args = ("-q", "work", "-c", "1", "--lease", "2")
    proc = start_worker(backend, ledger_path, *args, app="tests.apps.async_ledger:app")
    try:
        assert handle.result(timeout=60) == "sqs-async"
    finally:
        kill_group(proc)
        proc.wait(timeout=30)
    assert async_ledger.effects(str(ledger_path), "sqs-async") == 1


def test_a_queue_deleted_under_a_worker_is_created_again_and_served(
    app: App, backend: str, ledger_path: Path, sqs: Any, prefix: str
) -> None:
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "2"):
        before = ledger.record.enqueue("before")
        wait_until(lambda: before.state is JobState.SUCCEEDED, timeout=60, what="the first job")
        sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=f"{prefix}work")["QueueUrl"])
        # the producer's next send and the worker's next receive create it again (moto allows
        # that at once; SQS after 60 s)
        after = ledger.record.enqueue("after")
        wait_until(lambda: after.state is JobState.SUCCEEDED, timeout=60, what="the job after")
