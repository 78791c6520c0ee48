"""When the worker asks its transport for more: `Transport.receive_batch`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest

from jobkit.memory import MemoryJobStore, MemoryTransport
from jobkit.spi import Delivery, TransportBackend, Worker, WorkerOptions
from tests.apps import ledger


class CountingTransport(MemoryTransport):
    """Records how many messages each `receive` asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = super().receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        if got:
            self.asked.append(max_messages)
        return got


class PushedTransport(CountingTransport):
    receive_batch = 1


def _asked_while_draining(transport: CountingTransport, tmp_path: Path) -> list[int]:
    """Drain 6 jobs of 0.2 s through a worker holding at most 3 (one running, two queued)."""
    path = tmp_path / "ledger.db"
    ledger.connect(str(path)).close()
    backend = TransportBackend(transport, MemoryJobStore())
    ledger.app.use(backend)
    options = WorkerOptions(
        app_path="tests.apps.ledger:app",
        queues=("work",),
        concurrency=1,
        prefetch=2,
        lease=timedelta(seconds=30),
        poll=timedelta(seconds=0.1),
    )
    worker = Worker(ledger.app, backend, options)
    thread = threading.Thread(target=worker.run)
    try:
        handles = [ledger.record.enqueue(f"k{i}", 0.2) for i in range(6)]
        thread.start()
        for handle in handles:
            handle.result(timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=30)
        ledger.app.close()
    return transport.asked


def test_a_transport_that_receives_pushed_deliveries_is_asked_again_as_each_job_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(tmp_path / "ledger.db"))
    asked = _asked_while_draining(PushedTransport(), tmp_path)
    assert 1 in asked  # one left the three held: topped up at once


def test_a_transport_whose_receive_is_a_round_trip_is_asked_for_several_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(tmp_path / "ledger.db"))
    asked = _asked_while_draining(CountingTransport(), tmp_path)
    assert asked and min(asked) >= 2  # waits for room for the whole buffer, or nearly empty
