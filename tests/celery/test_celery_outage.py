"""A Celery worker (`jobkit worker` on celery+redis / celery+amqp) rides out its broker, or its
job store, stopped for 20 s and started again: every job completes, none is lost, the worker is
the same process. (Celery terminates the jobs running when the broker connection is lost, since
their late acks cannot be sent any more: those run again.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.outages import run_through_outage, stopped_for
from tests.servers.rabbitmq import RabbitServer
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.slow


@pytest.fixture
def app_on() -> Iterator[None]:
    yield
    L.app.close()


def _rides_out(url: str, server: RedisServer | RabbitServer, ledger: Path, tmp_path: Path) -> str:
    """Returns the worker's log."""
    L.app.use(url)
    log = tmp_path / "worker.log"
    run_through_outage(url, ledger, log, stopped_for(server, 20), jobs=30, retries_logged=False)
    assert L.app.backend.dead_letters(QUEUE) == []
    return log.read_text()


def test_worker_rides_out_redis_stopped_for_20_s(
    redis_url: str, redis_server: RedisServer, ledger: Path, app_on: None, tmp_path: Path
) -> None:
    _rides_out(redis_url, redis_server, ledger, tmp_path)


def test_worker_rides_out_rabbitmq_stopped_for_20_s(
    amqp_url: str, rabbit_server: RabbitServer, ledger: Path, app_on: None, tmp_path: Path
) -> None:
    _rides_out(amqp_url, rabbit_server, ledger, tmp_path)


def test_worker_rides_out_its_job_store_stopped_for_20_s(
    amqp_url: str, redis_server: RedisServer, ledger: Path, app_on: None, tmp_path: Path
) -> None:
    """celery+amqp keeps job records in Redis: record writes and done-key lookups wait for it."""
    log = _rides_out(amqp_url, redis_server, ledger, tmp_path)
    assert "retrying (every" in log  # the job bodies waited for the store, logged once
