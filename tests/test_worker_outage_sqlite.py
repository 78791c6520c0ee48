"""The worker rides out an SQLite database that another process holds locked for a while.

The lock lasts 40 s: longer than SQLite's busy timeout (30 s), so that calls fail ("database is
locked", a `BrokerUnavailable`) instead of just waiting for the lock.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobkit import App
from tests.outages import run_through_outage

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
    def lock() -> None:
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCK_FOR_40_S, str(tmp_path / "jobs.db")],
            stdout=subprocess.PIPE,
        )
        assert locker.stdout is not None
        assert locker.stdout.readline() == b"locked\n"
        assert locker.wait(timeout=60) == 0  # the lock held 40 s, then committed

    run_through_outage(backend, ledger_path, tmp_path / "worker.log", lock)
    assert app.backend.stats(["work"])[0].dead == 0
