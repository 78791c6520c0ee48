"""`--max-jobs-per-child` on a Celery worker: Celery's pool replaces its child processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
from tests.apps import ledger as L
from tests.apps.ledger import count, rows
from tests.celery.conftest import QUEUE
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def app_on() -> Iterator[None]:
    yield
    L.app.close()


def test_max_jobs_per_child_replaces_pool_children_without_losing_a_job(
    redis_url: str, ledger: Path, app_on: None
) -> None:
    L.app.use(redis_url)
    handles = L.record.enqueue_many([(f"c{i}", 0.0) for i in range(6)])
    args = ("-q", QUEUE, "-c", "1", "--max-jobs-per-child", "2")
    worker = start_worker(redis_url, ledger, *args)
    try:
        wait_until(
            lambda: all(h.state is jobkit.JobState.SUCCEEDED for h in handles),
            timeout=60,
            what="every job succeeded",
        )
    finally:
        kill_group(worker)
        worker.wait(timeout=30)
    assert count(ledger, "SELECT COUNT(*) FROM runs") == 6
    assert len(rows(ledger, "SELECT DISTINCT pid FROM runs")) == 3
