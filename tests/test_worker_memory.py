"""The memory backend with an in-process worker: how users unit-test their jobs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import JobState
from jobkit.spi import TransportBackend, Worker, WorkerOptions, open_backend
from tests.apps import ledger


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    path = tmp_path / "ledger.db"
    ledger.connect(str(path)).close()
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(path))
    backend = open_backend("memory://")
    assert isinstance(backend, TransportBackend)
    ledger.app.use(backend)
    options = WorkerOptions(
        app_path="tests.apps.ledger:app",
        queues=("work",),
        concurrency=1,
        lease=timedelta(seconds=5),
        poll=timedelta(seconds=0.1),
    )
    w = Worker(ledger.app, backend, options)
    thread = threading.Thread(target=w.run)
    thread.start()
    yield w
    w.stop()
    thread.join(timeout=30)
    ledger.app.close()


def test_in_process_worker_runs_jobs_from_the_memory_backend(worker: Worker) -> None:
    handle = ledger.record.enqueue("unit")
    assert handle.result(timeout=30) == "unit"
    assert handle.state is JobState.SUCCEEDED and handle.attempts == 1


def test_in_process_worker_dead_letters_a_rejected_job(worker: Worker) -> None:
    handle = ledger.permanent.enqueue("no")
    with pytest.raises(Exception, match="dead-letter queue"):
        handle.result(timeout=30)
    assert handle.attempts == 1
