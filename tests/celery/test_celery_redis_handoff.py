"""Celery on Redis: a message taken by a worker is never lost when the worker is SIGKILLed.

kombu takes a message off the queue's list (BRPOP) and records it as unacked (the record a dead
worker's messages are restored from) in a second round trip; a worker killed in between lost the
message for good. jobkit's transport takes and records in one Lua step. Real redis-server, real
`jobkit worker` processes, real SIGKILLs of the worker's process group while it is busy.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.waiting import wait_for_progress
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow

JOBS = 2000
KILLS = 8
RUNS_BETWEEN_KILLS = 100
WORKER = ("-q", QUEUE, "-c", "4", "--prefetch", "2", "--lease", "2")


def _keys_run(ledger: Path) -> int:
    return L.count(ledger, "SELECT COUNT(DISTINCT key) FROM runs")


def test_every_job_runs_although_busy_workers_are_sigkilled_again_and_again(
    redis_url: str, ledger: Path
) -> None:
    L.app.use(redis_url)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        keys = [f"handoff-{n}" for n in range(JOBS)]
        for key in keys:
            L.record.enqueue(key)
        for _ in range(KILLS):
            pair = [start_worker(redis_url, ledger, *WORKER) for _ in range(2)]
            workers.extend(pair)
            target = min(JOBS, _keys_run(ledger) + RUNS_BETWEEN_KILLS)
            wait_for_progress(lambda: _keys_run(ledger), target, what="jobs ran")
            for proc in pair:  # SIGKILL mid-stream: both workers are taking messages
                kill_group(proc)
            for proc in pair:
                proc.wait(timeout=30)
        workers.append(start_worker(redis_url, ledger, *WORKER))
        try:
            wait_for_progress(lambda: _keys_run(ledger), JOBS, what="every job ran")
        finally:
            ran = {str(r[0]) for r in L.rows(ledger, "SELECT DISTINCT key FROM runs")}
            missing = sorted(set(keys) - ran)
            assert not missing, f"{len(missing)} jobs never ran: {missing[:10]}"
    finally:
        for proc in workers:
            kill_group(proc)  # only those still running: the worker started last
            proc.wait(timeout=30)
        L.app.close()
