"""`async def` jobs on Celery's own worker (celery+redis), with real `jobkit worker` processes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
from tests.apps import async_ledger as A
from tests.celery.conftest import QUEUE, runs
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def worker(redis_url: str, ledger: Path) -> Iterator[subprocess.Popen[bytes]]:
    A.app.use(redis_url)
    proc = start_worker(
        redis_url, ledger, "-q", QUEUE, "-c", "1", "--lease", "2", app="tests.apps.async_ledger:app"
    )
    yield proc
    kill_group(proc)
    proc.wait(timeout=30)
    A.app.close()


def test_async_job_runs_to_completion_and_its_effect_is_visible(
    worker: subprocess.Popen[bytes], ledger: Path
) -> None:
    handle = A.arecord.enqueue("celery-async", 0.2)
    assert handle.result(timeout=60) == "celery-async"
    assert A.effects(str(ledger), "celery-async") == 1
    assert [attempt for _, attempt, _ in runs(ledger, "celery-async")] == [1]


def test_failing_async_job_is_retried_until_it_succeeds(
    worker: subprocess.Popen[bytes], ledger: Path
) -> None:
    handle = A.aflaky.enqueue("celery-flaky", 1)
    assert handle.result(timeout=60) == 2
    assert handle.attempts == 2


def test_async_job_past_its_time_limit_is_stopped(
    worker: subprocess.Popen[bytes], ledger: Path
) -> None:
    stuck = A.ahang.enqueue("celery-stuck", 60.0)
    wait_until(lambda: stuck.state is jobkit.JobState.DEAD, timeout=60, what="the job stopped")
    assert all("TimeLimitExceeded" in e.error for e in stuck.errors)
    assert A.effects(str(ledger), "celery-stuck") == 0
    assert worker.poll() is None


def test_plain_job_returning_a_coroutine_is_dead_lettered_not_succeeded(
    worker: subprocess.Popen[bytes], ledger: Path
) -> None:
    handle = A.forgot_async.enqueue("celery-forgot")
    with pytest.raises(jobkit.JobFailed, match="declare the job function with async def"):
        handle.result(timeout=60)
