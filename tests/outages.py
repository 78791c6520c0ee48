"""What the broker-outage tests (one per backend) share: jobs running through an outage."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from jobkit import JobState
from tests.apps import ledger
from tests.apps.ledger import count
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker


class Stoppable(Protocol):
    def stop_broker(self) -> None: ...
    def start_broker(self) -> None: ...


def stopped_for(server: Stoppable, seconds: float) -> Callable[[], None]:
    """An outage: the server stopped for `seconds`, then started again (same port, same data)."""

    def outage() -> None:
        server.stop_broker()
        try:
            time.sleep(seconds)  # the outage itself
        finally:
            server.start_broker()

    return outage


def run_through_outage(
    backend: str,
    ledger_path: Path,
    log: Path,
    outage: Callable[[], None],
    *,
    jobs: int = 60,
    retries_logged: bool = True,
) -> None:
    """Enqueue `jobs` jobs of 0.2 s, start a worker (2 processes), cause `outage` once some are
    done, and check: every job succeeds and has its effect, and the worker is the same process,
    still running. With `retries_logged`, it logged the outage once per streak of failures, not
    once per failed try."""
    handles = ledger.record.enqueue_many([(f"k{i}", 0.2) for i in range(jobs)])
    worker = start_worker(backend, ledger_path, "-q", "work", "-c", "2", "--lease", "3", log=log)
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") >= 5,
            timeout=60,
            what="the first jobs done",
        )
        outage()
        assert worker.poll() is None, log.read_text()[-3000:]
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=120,
            what="every job succeeded",
        )
        assert worker.poll() is None, log.read_text()[-3000:]
    finally:
        kill_group(worker)
        worker.wait(timeout=30)
    assert count(ledger_path, "SELECT COUNT(DISTINCT key) FROM effects") == jobs
    text = log.read_text()
    retrying = [line for line in text.splitlines() if "retrying (every" in line]
    if retries_logged:
        assert retrying, f"the worker never noticed the outage: {text[-3000:]}"
    assert len(retrying) < 20, f"logged every failed try: {len(retrying)} lines"
