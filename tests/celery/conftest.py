"""Fixtures for the Celery adapter tests: one real redis-server per session (and the shared
rabbitmq-server of tests/conftest.py), on 127.0.0.1 ports of their own, stopped by PID at the end.

A server that cannot start makes the tests that need it fail (error), never skip: under CI=true
as everywhere else.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers.rabbitmq import RabbitServer
from tests.servers.redis import RedisServer, start_redis

QUEUE = "work"  # the queue of tests.apps.ledger's jobs


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = start_redis()
    except RuntimeError as exc:
        pytest.fail(f"cannot start redis-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


def _flush(server: RedisServer) -> None:
    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A Celery+Redis backend URL on a flushed server, 2 s visibility timeout."""
    _flush(redis_server)
    return f"celery+{redis_server.url}/0?visibility_timeout=2"


@pytest.fixture
def amqp_url(rabbit_server: RabbitServer, redis_server: RedisServer) -> Iterator[str]:
    """A Celery+RabbitMQ backend URL (job records in Redis db 1); its queues purged."""
    _flush(redis_server)
    rabbit_server.delete_queues(QUEUE)  # another adapter's tests may have declared it otherwise
    url = f"celery+{rabbit_server.url}?store={redis_server.url}/1"
    from jobkit_celery.probe import probe_from_url

    probe = probe_from_url(url)
    probe.cleanup([QUEUE])
    probe.close()
    yield url


@pytest.fixture(params=["redis", "amqp"])
def any_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on both brokers."""
    name = "redis_url" if request.param == "redis" else "amqp_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(path))
    from tests.apps.ledger import connect

    connect(str(path)).close()
    return path


def runs(ledger: Path, key: str) -> list[tuple[str, int, float]]:
    """(job id, attempt, time) of every run of `key`, in order."""
    db = sqlite3.connect(ledger, timeout=30)
    try:
        rows = db.execute(
            "SELECT job_id, attempt, at FROM runs WHERE key = ? ORDER BY at", (key,)
        ).fetchall()
    finally:
        db.close()
    return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]


def effect_done(ledger: Path, key: str) -> bool:
    db = sqlite3.connect(ledger, timeout=30)
    try:
        row = db.execute("SELECT 1 FROM effects WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return row is not None
