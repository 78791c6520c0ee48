"""The dedup window with a real worker: a duplicate after `keys_ttl` runs again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jobkit import App, JobHandle, JobState
from tests.apps import ledger
from tests.apps.ledger import count
from tests.waiting import wait_until
from tests.workers import running_worker

pytestmark = pytest.mark.slow

KEYS_TTL = 1.0


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}?keys_ttl={KEYS_TTL}s"


def runs(ledger_path: Path) -> int:
    return count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='dup'")


def done(handle: JobHandle) -> bool:
    return handle.state is JobState.SUCCEEDED


def test_duplicate_after_the_keys_window_runs_again(
    app: App, backend: str, ledger_path: Path
) -> None:
    first = ledger.record.options(idempotency_key="order-9").enqueue("dup")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--poll", "0.2s"):
        wait_until(lambda: done(first), timeout=30, what="the first run")
        succeeded_at = time.monotonic()
        # The window is measured from the success; wait it out (this wait IS the scenario).
        time.sleep(max(0.0, KEYS_TTL + 0.2 - (time.monotonic() - succeeded_at)))
        again = ledger.record.options(idempotency_key="order-9").enqueue("dup")
        wait_until(lambda: done(again), timeout=30, what="the late duplicate")
    assert runs(ledger_path) == 2


def test_duplicate_within_the_keys_window_does_not_run(
    app: App, tmp_path: Path, ledger_path: Path
) -> None:
    long_window = f"sqlite:///{tmp_path / 'jobs.db'}?keys_ttl=1h"
    app.use(long_window)
    first = ledger.record.options(idempotency_key="order-9").enqueue("dup")
    with running_worker(long_window, ledger_path, "-q", "work", "-c", "1"):
        wait_until(lambda: done(first), timeout=30, what="the first run")
        again = ledger.record.options(idempotency_key="order-9").enqueue("dup")
        wait_until(lambda: done(again), timeout=30, what="the duplicate acked")
    assert runs(ledger_path) == 1
