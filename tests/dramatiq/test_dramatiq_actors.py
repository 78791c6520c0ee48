"""jobkit jobs as Dramatiq actors: enqueued through jobkit, run by a plain ``dramatiq`` worker
(and the actors are declared under the jobs' names, on the jobs' queues)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dramatiq
import pytest
from jobkit_dramatiq import declare_actors, native_broker, parse_url

from tests.apps import ledger as L
from tests.dramatiq.conftest import effect_done
from tests.waiting import wait_until
from tests.workers import ROOT, kill_group

pytestmark = pytest.mark.slow


@pytest.fixture
def app_closed() -> Iterator[None]:
    yield
    L.app.close()


def test_jobs_are_declared_as_actors_named_after_them(redis_url: str) -> None:
    broker = native_broker(parse_url(redis_url))
    actors = declare_actors(L.app, broker)
    assert set(actors) == set(L.app.jobs)
    actor = broker.get_actor(L.record.name)
    assert isinstance(actor, dramatiq.Actor)
    assert actor.queue_name == "work"
    assert actor.options["max_retries"] == 0
    broker.close()


def test_a_plain_dramatiq_worker_runs_jobs_enqueued_through_jobkit(
    any_url: str, ledger: Path, app_closed: None, tmp_path: Path
) -> None:
    L.app.use(any_url)
    log = tmp_path / "dramatiq.log"
    L.record.enqueue("now")
    L.record.options(delay=timedelta(seconds=0.5)).enqueue("later")
    env = dict(
        os.environ,
        JOBKIT_TEST_LEDGER=str(ledger),
        JOBKIT_APP="tests.apps.ledger:app",
        JOBKIT_BACKEND=any_url,
        PYTHONPATH=str(ROOT),
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "jobkit_dramatiq.env",
         "--processes", "1", "--threads", "2", "--queues", "work"],
        cwd=ROOT, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=log.open("ab"),
    )  # fmt: skip
    try:
        assert wait_until(
            lambda: effect_done(ledger, "now") and effect_done(ledger, "later"),
            timeout=60,
            what=f"both jobs run by the dramatiq worker; its log: {log}",
        )
    finally:
        kill_group(worker)
        worker.wait(timeout=30)
