"""The Redis visibility-timeout traps, with real workers: delayed jobs and long jobs run once.

Celery's own ETA/countdown longer than ``visibility_timeout`` runs a task again and again
(kombu#337); a task running longer than it is started again. jobkit keeps delayed messages out
of kombu's unacked index and refreshes the messages a live worker holds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from jobkit_celery.probe import probe_from_url

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE, effect_done, runs
from tests.servers.redis import RedisServer
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        kill_group(proc)
        proc.wait(timeout=30)
    L.app.close()


def _url(server: RedisServer, vt: float) -> str:
    import redis

    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()
    return f"celery+{server.url}/0?visibility_timeout={vt:g}"


def _delayed_job_runs_once_on_time(
    url: str, ledger: Path, workers: list[subprocess.Popen[bytes]], delay: float, vt: float
) -> None:
    L.app.use(url)
    for _ in range(2):  # two workers: either could pick up a restored duplicate
        workers.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1"))
    sent = time.time()
    handle = L.record.options(delay=timedelta(seconds=delay)).enqueue("later")
    wait_until(lambda: effect_done(ledger, "later"), timeout=delay + 30, what="the delayed job ran")
    # Past the due time, wait out three more visibility timeouts for a duplicate to show.
    time.sleep(3 * vt)  # the sleep IS the observation window for duplicates
    started = runs(ledger, "later")
    assert len(started) == 1, f"ran {len(started)} times"
    assert started[0][2] >= sent + delay
    assert handle.result(timeout=5) == "later"


def test_delay_three_times_the_visibility_timeout_runs_once(redis_server, ledger, workers):
    vt = 2.0
    _delayed_job_runs_once_on_time(_url(redis_server, vt), ledger, workers, delay=6.0, vt=vt)


def test_30s_delay_with_10s_visibility_timeout_runs_once(redis_server, ledger, workers):
    vt = 10.0
    _delayed_job_runs_once_on_time(_url(redis_server, vt), ledger, workers, delay=30.0, vt=vt)


def test_job_longer_than_the_visibility_timeout_is_not_started_twice(redis_server, ledger, workers):
    url = _url(redis_server, 2.0)
    L.app.use(url)
    for _ in range(2):
        workers.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1"))
    handle = L.record.enqueue("long", sleep=8.0)  # four visibility timeouts
    assert handle.result(timeout=60) == "long"
    assert len(runs(ledger, "long")) == 1


def test_native_defaults_lose_a_sigkilled_job(redis_server, ledger, workers):
    """Celery's defaults ack before running: after a SIGKILL the job is nowhere on the broker.

    This is the loss the conformance suite must catch (it proves the check can fail).
    """
    url = _url(redis_server, 2.0) + "&profile=native"
    L.app.use(url)
    workers.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1"))
    L.record.enqueue("lost", sleep=5.0)
    wait_until(lambda: runs(ledger, "lost"), timeout=60, what="the job started")
    kill_group(workers[0])
    workers[0].wait(timeout=30)
    probe = probe_from_url(url)
    try:
        assert probe.depth(QUEUE) == 0  # not ready, not delayed, not unacked: gone
    finally:
        probe.close()
    workers.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1"))
    time.sleep(6)  # the sleep IS the window in which a hardened setup would have re-run it
    assert len(runs(ledger, "lost")) == 1
    assert not effect_done(ledger, "lost")


def test_hardened_defaults_keep_a_sigkilled_job_on_the_broker(redis_server, ledger, workers):
    url = _url(redis_server, 2.0)
    L.app.use(url)
    workers.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1"))
    L.record.enqueue("kept", sleep=5.0)
    wait_until(lambda: runs(ledger, "kept"), timeout=60, what="the job started")
    kill_group(workers[0])
    workers[0].wait(timeout=30)
    probe = probe_from_url(url)
    try:
        assert probe.depth(QUEUE) == 1  # in kombu's unacked index, to be restored
    finally:
        probe.close()
