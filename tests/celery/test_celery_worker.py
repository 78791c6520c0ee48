"""The Celery backend with real brokers and real `jobkit worker` processes (Celery workers)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobkit_celery.probe import probe_from_url

import jobkit
from jobkit import spi
from tests.apps import ledger as L
from tests.celery.conftest import QUEUE, effect_done, runs
from tests.waiting import wait_until
from tests.workers import ROOT, kill_group, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def app_on(request: pytest.FixtureRequest) -> Iterator[object]:
    """`tests.apps.ledger.app`, switched to the backend under test and closed afterwards."""
    yield L.app
    L.app.close()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        kill_group(proc)
        proc.wait(timeout=30)


def spawn(procs: list[subprocess.Popen[bytes]], url: str, ledger: Path, *args: str) -> None:
    procs.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1", "--lease", "2", *args))


def test_a_job_runs_and_its_result_is_recorded(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.record.enqueue("plain")
    assert handle.result(timeout=60) == "plain"
    assert handle.state is jobkit.JobState.SUCCEEDED
    assert [attempt for _, attempt, _ in runs(ledger, "plain")] == [1]


def test_sigkilled_worker_mid_job_loses_nothing(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.record.enqueue("crash", sleep=4.0)
    wait_until(lambda: runs(ledger, "crash"), timeout=60, what="the job started")
    kill_group(workers[0])  # SIGKILL: the Celery parent and its pool child
    workers[0].wait(timeout=30)
    spawn(workers, any_url, ledger)
    assert handle.result(timeout=90) == "crash"
    attempts = [attempt for _, attempt, _ in runs(ledger, "crash")]
    assert len(attempts) >= 2 and attempts[-1] == 2
    assert effect_done(ledger, "crash")


def test_sigkilled_pool_child_is_requeued_and_counted(redis_url, ledger, app_on, workers):
    L.app.use(redis_url)
    spawn(workers, redis_url, ledger)
    L.record.enqueue("child", sleep=4.0)
    wait_until(lambda: runs(ledger, "child"), timeout=60, what="the job started")
    db = sqlite3.connect(ledger)
    (child_pid,) = db.execute("SELECT pid FROM runs WHERE key = 'child'").fetchone()
    db.close()
    os.kill(child_pid, signal.SIGKILL)  # only the pool child: the Celery parent survives
    wait_until(lambda: effect_done(ledger, "child"), timeout=60, what="the job re-ran")
    assert [attempt for _, attempt, _ in runs(ledger, "child")] == [1, 2]


def test_failing_job_is_retried_then_dead_lettered_and_replayed(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.always_fails.enqueue("doomed")
    with pytest.raises(jobkit.JobFailed):
        handle.result(timeout=60)
    assert [attempt for _, attempt, _ in runs(ledger, "doomed")] == [1, 2, 3, 4]
    dead = L.app.backend.dead_letters(QUEUE)
    assert [d.id for d in dead] == [handle.id]
    assert "ConnectionError" in dead[0].reason
    assert spi.decode(dead[0].body).args == ("doomed",)
    assert L.app.backend.replay(QUEUE, ids=[handle.id]) == 1
    wait_until(lambda: len(runs(ledger, "doomed")) == 8, timeout=60, what="the replay ran")
    assert [attempt for _, attempt, _ in runs(ledger, "doomed")][4:] == [1, 2, 3, 4]
    wait_until(lambda: len(L.app.backend.dead_letters(QUEUE)) == 1, timeout=30, what="dead again")
    assert L.app.backend.purge(QUEUE) == 1
    assert L.app.backend.dead_letters(QUEUE) == []


def test_permanent_error_is_not_retried(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.permanent.enqueue("never")
    with pytest.raises(jobkit.JobFailed):
        handle.result(timeout=60)
    assert len(runs(ledger, "never")) == 1


def test_time_limit_stops_the_job_and_counts_attempts(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.hang.enqueue("stuck", 30.0)
    with pytest.raises(jobkit.JobFailed, match="time limit"):
        handle.result(timeout=60)
    assert [attempt for _, attempt, _ in runs(ledger, "stuck")] == [1, 2]


def test_undecodable_message_is_dead_lettered_and_worker_keeps_serving(
    any_url, ledger, app_on, workers
):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    probe = probe_from_url(any_url, L.app.backend)
    try:
        probe.inject_raw(QUEUE, b"\xff\xfe this is not a message {", id="poison")
        handle = L.record.enqueue("after-poison")
        assert handle.result(timeout=60) == "after-poison"
        dead = wait_until(lambda: probe.dead(QUEUE), timeout=30, what="the poison is dead")
    finally:
        probe.close()
    assert dead[0].body == b"\xff\xfe this is not a message {"
    assert "undecodable" in dead[0].reason
    assert workers[0].poll() is None


def test_idempotency_key_runs_a_job_once(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    first = L.record.options(idempotency_key="k1").enqueue("idem")
    second = L.record.options(idempotency_key="k1").enqueue("idem")
    first.result(timeout=60)
    wait_until(lambda: second.state is jobkit.JobState.SUCCEEDED, timeout=60, what="skipped")
    assert len(runs(ledger, "idem")) == 1


def test_dlq_cli_lists_replays_and_purges(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger)
    handle = L.permanent.enqueue("cli")
    with pytest.raises(jobkit.JobFailed):
        handle.result(timeout=60)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def cli(*args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "jobkit.cli.main", "--backend", any_url, *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return out.stdout

    listed = json.loads(cli("dlq", "list", QUEUE, "--json"))
    assert [row["id"] for row in listed] == [handle.id]
    status = json.loads(cli("status", "--json"))
    assert QUEUE in json.dumps(status)
    cli("dlq", "replay", QUEUE)
    wait_until(lambda: len(runs(ledger, "cli")) == 2, timeout=60, what="the replay ran")
    wait_until(lambda: L.app.backend.dead_letters(QUEUE), timeout=30, what="dead again")
    cli("dlq", "purge", QUEUE)
    assert L.app.backend.dead_letters(QUEUE) == []


def test_sigterm_lets_the_running_job_finish(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger, "--grace", "20")
    handle = L.record.enqueue("graceful", sleep=2.0)
    wait_until(lambda: runs(ledger, "graceful"), timeout=60, what="the job started")
    workers[0].send_signal(signal.SIGTERM)
    workers[0].wait(timeout=40)
    assert handle.state is jobkit.JobState.SUCCEEDED
    assert len(runs(ledger, "graceful")) == 1


def test_plain_celery_command_serves_jobkit_jobs(redis_url, ledger, app_on, workers):
    L.app.use(redis_url)
    env = dict(
        os.environ, PYTHONPATH=str(ROOT), JOBKIT_APP="tests.apps.ledger:app",
        JOBKIT_BACKEND=redis_url, JOBKIT_TEST_LEDGER=str(ledger),
    )  # fmt: skip
    celery = Path(sys.executable).parent / "celery"
    workers.append(
        subprocess.Popen(
            [
                str(celery),
                "-A",
                "jobkit_celery.env",
                "worker",
                "-Q",
                QUEUE,
                "-c",
                "1",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "WARNING",
            ],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
    )
    handle = L.record.enqueue("via-celery")
    assert handle.result(timeout=60) == "via-celery"


def test_json_that_is_not_a_kombu_message_is_dead_lettered_on_redis(
    redis_url, ledger, app_on, workers
):
    L.app.use(redis_url)
    spawn(workers, redis_url, ledger)
    not_messages = [
        b'{"hello": 1}',
        b"[1, 2]",
        json.dumps(
            {
                "body": "!!! not base64",
                "content-type": "application/json",
                "headers": {},
                "properties": {
                    "delivery_tag": "t1",
                    "body_encoding": "base64",
                    "delivery_info": {"exchange": QUEUE, "routing_key": QUEUE},
                },
            }
        ).encode(),
    ]
    probe = probe_from_url(redis_url)
    try:
        for body in not_messages:
            probe.inject_raw(QUEUE, body)
        assert L.record.enqueue("after-junk").result(timeout=60) == "after-junk"
        dead = wait_until(lambda: len(probe.dead(QUEUE)) == 3 and probe.dead(QUEUE), timeout=30)
    finally:
        probe.close()
    assert sorted(d.body for d in dead) == sorted(not_messages)
    assert workers[0].poll() is None


def test_sigterm_past_the_grace_stops_the_job_and_it_runs_again(any_url, ledger, app_on, workers):
    L.app.use(any_url)
    spawn(workers, any_url, ledger, "--grace", "1")
    handle = L.record.enqueue("cut-short", sleep=6.0)
    wait_until(lambda: runs(ledger, "cut-short"), timeout=60, what="the job started")
    workers[0].send_signal(signal.SIGTERM)
    assert workers[0].wait(timeout=20) is not None  # gone well before the job would end
    assert not effect_done(ledger, "cut-short")
    spawn(workers, any_url, ledger)
    assert handle.result(timeout=60) == "cut-short"
    assert len(runs(ledger, "cut-short")) == 2


def test_burst_worker_stops_when_the_queue_is_empty(redis_url, ledger, app_on, workers):
    L.app.use(redis_url)
    handles = [L.record.enqueue(f"burst-{i}") for i in range(3)]
    spawn(workers, redis_url, ledger, "--burst")
    assert workers[0].wait(timeout=60) == 0
    assert all(h.state is jobkit.JobState.SUCCEEDED for h in handles)


def test_second_sigterm_stops_at_once_and_the_job_runs_again(redis_url, ledger, app_on, workers):
    L.app.use(redis_url)
    spawn(workers, redis_url, ledger, "--grace", "60")
    handle = L.record.enqueue("twice-termed", sleep=8.0)
    wait_until(lambda: runs(ledger, "twice-termed"), timeout=60, what="the job started")
    workers[0].send_signal(signal.SIGTERM)
    time.sleep(1)  # signals do not queue: let the first one be handled (the sleep IS the gap)
    workers[0].send_signal(signal.SIGTERM)
    assert workers[0].wait(timeout=20) is not None  # long before the grace or the job ends
    spawn(workers, redis_url, ledger)
    assert handle.result(timeout=60) == "twice-termed"
    assert len(runs(ledger, "twice-termed")) == 2


def test_job_ignoring_its_soft_limit_is_killed_counted_and_dead_lettered(any_url, ledger, workers):
    from tests.celery import stubborn_app

    url = any_url + ("&" if "?" in any_url else "?") + "hard_limit_margin=1"
    stubborn_app.app.use(url)
    try:
        workers.append(
            start_worker(url, ledger, "-q", QUEUE, "-c", "1", app="tests.celery.stubborn_app:app")
        )
        handle = stubborn_app.stubborn.enqueue("stubborn")
        with pytest.raises(jobkit.JobFailed, match="lost"):
            handle.result(timeout=60)
        assert len(runs(ledger, "stubborn")) == 2  # max_attempts; the third delivery never ran
        assert [d.id for d in stubborn_app.app.backend.dead_letters(QUEUE)] == [handle.id]
    finally:
        stubborn_app.app.close()
