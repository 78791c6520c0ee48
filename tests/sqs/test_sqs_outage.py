"""jobkit's worker on SQS rides out an SQS endpoint that is unreachable for 20 s."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from jobkit import App, JobState
from tests.apps import ledger
from tests.apps.ledger import count
from tests.outages import run_through_outage, stopped_for
from tests.servers.moto import MotoServer
from tests.waiting import wait_until
from tests.workers import kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(moto: MotoServer, prefix: str, tmp_path: Path) -> str:
    return moto.url(prefix=prefix, visibility="3", store=f"sqlite:///{tmp_path / 'jobs.db'}")


def test_worker_rides_out_sqs_unreachable_for_20_s_and_loses_no_job(
    app: App, backend: str, moto: MotoServer, ledger_path: Path, tmp_path: Path
) -> None:
    run_through_outage(backend, ledger_path, tmp_path / "worker.log", stopped_for(moto, 20))
    wait_until(
        lambda: app.backend.stats(["work"])[0].ready == 0, timeout=30, what="the queue drained"
    )
    assert app.backend.stats(["work"])[0].dead == 0


def test_worker_stopped_during_an_outage_still_releases_its_jobs_when_sqs_returns(
    app: App, backend: str, moto: MotoServer, ledger_path: Path, tmp_path: Path
) -> None:
    handles = ledger.record.enqueue_many([(f"s{i}", 2.0) for i in range(3)])
    log = tmp_path / "worker.log"
    # A 60 s lease: if the worker left without releasing, the jobs would stay invisible for it.
    args = ("-q", "work", "-c", "1", "--prefetch", "3", "--lease", "60", "--grace", "0.5")
    worker = start_worker(backend, ledger_path, *args, log=log)
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs") >= 1,
            timeout=60,
            what="the first job started",
        )
        moto.stop_broker()
        try:
            worker.send_signal(signal.SIGTERM)
            time.sleep(3)  # the outage goes on while the worker tries to release its jobs
        finally:
            moto.start_broker()
        assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        kill_group(worker)
        worker.wait(timeout=30)
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "60"):
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=30,
            what="every job run by the next worker",
        )
