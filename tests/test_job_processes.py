"""Job processes, with real worker processes on the SQLite backend: exits seen by process, what
programs started by jobs inherit, big frames, and recycling after N jobs."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from jobkit import App, JobState
from tests.apps import ledger
from tests.apps.ledger import count, rows
from tests.waiting import wait_until
from tests.workers import kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow

MB = 1024 * 1024


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_killed_job_whose_grandchild_holds_its_pipe_is_seen_dead_and_runs_again(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.leave_grandchild.enqueue("orphan")
    # A 60 s lease: the job must run again because its process is seen dead, not because its
    # lease lapsed (the grandchild keeps the job's pipe open for 60 s).
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "60"):
        pids = wait_until(
            lambda: rows(ledger_path, "SELECT pid FROM runs WHERE key='orphan'"),
            timeout=30,
            what="the first attempt",
        )
        os.kill(int(pids[0][0]), signal.SIGKILL)  # type: ignore[call-overload]
        wait_until(lambda: handle.state is JobState.SUCCEEDED, timeout=20, what="the re-run")
    attempts = [a for (a,) in rows(ledger_path, "SELECT attempt FROM runs ORDER BY at")]
    assert attempts == [1, 2]


def test_programs_started_by_jobs_get_only_standard_descriptors_and_default_signals(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.what_programs_inherit.enqueue("inherit")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        seen = handle.result(timeout=30)
    assert seen["fds"] == "0 1 2 3"  # 3: the directory listing itself
    ignored = int(seen["sig_ign"], 16)
    assert not ignored & (1 << (signal.SIGINT - 1))
    assert not ignored & (1 << (signal.SIGTERM - 1))


def test_megabyte_arguments_and_results_with_prefetch_4_on_two_workers_run_once(
    app: App, backend: str, ledger_path: Path
) -> None:
    payloads = [chr(ord("a") + i) * MB for i in range(10)]
    handles = ledger.echo.enqueue_many([(f"big{i}", p) for i, p in enumerate(payloads)])
    args = ("-q", "work", "-c", "2", "--prefetch", "4", "--lease", "3")
    workers = [start_worker(backend, ledger_path, *args) for _ in range(2)]
    try:
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=120,
            what="every job succeeded",
        )
    finally:
        for worker in workers:
            kill_group(worker)
            worker.wait(timeout=30)
    assert [h.result(timeout=5) for h in handles] == payloads
    runs = rows(ledger_path, "SELECT key, COUNT(*) FROM runs GROUP BY key")
    assert sorted(runs) == sorted((f"big{i}", 1) for i in range(10))
    assert app.backend.stats(["work"])[0].dead == 0


def test_max_jobs_per_child_replaces_job_processes_without_losing_or_rerunning_a_job(
    app: App, backend: str, ledger_path: Path
) -> None:
    handles = ledger.record.enqueue_many([(f"r{i}", 0.0) for i in range(9)])
    args = ("-q", "work", "-c", "1", "--prefetch", "2", "--max-jobs-per-child", "2")
    with running_worker(backend, ledger_path, *args):
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=60,
            what="every job succeeded",
        )
    assert count(ledger_path, "SELECT COUNT(*) FROM runs") == 9  # each job ran once
    per_process = rows(ledger_path, "SELECT pid, COUNT(*) FROM runs GROUP BY pid")
    assert len(per_process) == 5
    assert all(int(n) <= 2 for _, n in per_process)  # type: ignore[call-overload]
