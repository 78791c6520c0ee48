"""`jobkit status` on Celery lists job queues only, with a real worker (and its Celery
control queues) on a real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.workers import jobkit_cli, running_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def served(any_url: str, ledger: Path) -> Iterator[str]:
    """A worker on `QUEUE` that has run a job (its control queues exist by then)."""
    L.app.use(any_url)
    with running_worker(any_url, ledger, "-q", QUEUE, "-c", "1"):
        assert L.record.enqueue("status").result(timeout=90) == "status"
        yield any_url
    L.app.close()


def test_status_lists_job_queues_and_not_celery_control_queues(served: str) -> None:
    out = jobkit_cli(served, "status", "--json")
    assert out.returncode == 0, out.stderr
    queues = {row["queue"] for row in json.loads(out.stdout)}
    assert QUEUE in queues
    internal = sorted(q for q in queues if "pidbox" in q or q.startswith(("celeryev", "_kombu")))
    assert internal == []
