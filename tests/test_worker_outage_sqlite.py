"""The worker rides out an SQLite database that another process holds locked for a while.

The lock lasts 40 s: longer than SQLite's busy timeout (30 s), so that calls fail ("database is
locked", a `BrokerUnavailable`) instead of just waiting for the lock.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobkit import App, JobState
from tests.apps import ledger
from tests.apps.ledger import count
from tests.outages import assert_rode_out_outage
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow

_LOCK_FOR_40_S = """
import sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(40)
db.execute("COMMIT")
"""


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_worker_rides_out_a_database_locked_for_40_s_and_loses_no_job(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    handles = ledger.record.enqueue_many([(f"k{i}", 0.2) for i in range(60)])
    log = tmp_path / "worker.log"
    worker = start_worker(
        backend, ledger_path, "-q", "work", "-c", "2", "--lease", "3", "--burst", log=log
    )
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") >= 5,
            timeout=60,
            what="the first jobs done",
        )
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCK_FOR_40_S, str(tmp_path / "jobs.db")],
            stdout=subprocess.PIPE,
        )
        assert locker.stdout is not None
        assert locker.stdout.readline() == b"locked\n"
        assert locker.wait(timeout=60) == 0  # the lock held 40 s, then committed
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=120,
            what="every job succeeded",
        )
        assert_rode_out_outage(worker, log)
    finally:
        kill_group(worker)
        worker.wait(timeout=30)
    assert count(ledger_path, "SELECT COUNT(DISTINCT key) FROM effects") == 60
    assert app.backend.stats(["work"])[0].dead == 0
