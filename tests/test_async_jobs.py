"""`async def` jobs on jobkit's own worker (embedded SQLite), with real worker processes."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from jobkit import App, JobFailed, JobState
from tests.apps import async_ledger as A
from tests.apps.ledger import rows
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow

APP = "tests.apps.async_ledger:app"


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@contextmanager
def async_worker(backend: str, ledger: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(backend, ledger, "-q", "work", "-c", "1", "--lease", "5", app=APP)
    try:
        yield proc
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def test_async_job_runs_to_completion_and_its_effect_and_result_are_kept(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = A.arecord.enqueue("a1", 0.2)
    with async_worker(backend, ledger_path):
        assert handle.result(timeout=30) == "a1"
    assert A.effects(str(ledger_path), "a1") == 1
    assert rows(ledger_path, "SELECT attempt FROM runs WHERE key='a1'") == [(1,)]  # current_job()


def test_failing_async_job_is_retried_until_it_succeeds(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = A.aflaky.enqueue("flaky", 2)
    with async_worker(backend, ledger_path):
        assert handle.result(timeout=30) == 3
    assert handle.attempts == 3
    assert [e.error for e in handle.errors] == [
        "ConnectionError: run 1 of flaky fails",
        "ConnectionError: run 2 of flaky fails",
    ]


def test_async_job_past_its_time_limit_is_stopped_and_counted(
    app: App, backend: str, ledger_path: Path
) -> None:
    stuck = A.ahang.enqueue("stuck", 60.0)
    with async_worker(backend, ledger_path) as proc:
        wait_until(lambda: stuck.state is JobState.DEAD, timeout=30, what="the stuck job stopped")
        assert proc.poll() is None
    assert stuck.attempts == 2
    assert all("TimeLimitExceeded" in e.error for e in stuck.errors)
    assert A.effects(str(ledger_path), "stuck") == 0


def test_plain_job_returning_a_coroutine_fails_permanently_saying_to_declare_it_async(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = A.forgot_async.enqueue("forgot")
    with (
        async_worker(backend, ledger_path),
        pytest.raises(JobFailed, match="declare the job function with async def"),
    ):
        handle.result(timeout=30)
    assert handle.state is JobState.DEAD
    assert A.effects(str(ledger_path), "forgot") == 0


def test_result_that_is_not_exact_json_fails_the_job_naming_the_problem(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = A.returns_tuple.enqueue("tuple")
    with (
        async_worker(backend, ledger_path),
        pytest.raises(JobFailed, match=r"result: tuple is not JSON"),
    ):
        handle.result(timeout=30)


def test_async_producer_enqueues_and_awaits_without_blocking_the_event_loop(
    app: App, backend: str, ledger_path: Path
) -> None:
    async def produce() -> tuple[str, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        handle = await A.arecord.options(priority=1).aenqueue("producer", 0.5)
        started = time.monotonic()
        result = await handle.aresult(timeout=30)
        waited = time.monotonic() - started
        ticking.cancel()
        return result, ticks / max(waited, 0.01)

    with async_worker(backend, ledger_path):
        result, ticks_per_second = asyncio.run(produce())
    assert result == "producer"
    assert ticks_per_second > 10  # the loop kept running while the producer waited
