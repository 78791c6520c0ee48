"""Fixtures for the Dramatiq adapter tests: one real redis-server and one real rabbitmq-server
per session, on 127.0.0.1 ports of their own, stopped by PID at the end.

A server that cannot start makes the tests that need it fail (error), never skip.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.servers.rabbitmq import RabbitServer, start_rabbitmq
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


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    try:
        server = start_rabbitmq()
    except RuntimeError as exc:
        pytest.fail(f"cannot start rabbitmq-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


def flush(server: RedisServer) -> None:
    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A dramatiq+redis URL on a flushed server."""
    flush(redis_server)
    return f"dramatiq+{redis_server.url}/0"


@pytest.fixture
def amqp_url(rabbit_server: RabbitServer) -> str:
    """A dramatiq+amqp URL whose `work` queues are fresh."""
    url = f"dramatiq+{rabbit_server.url}"
    from jobkit_dramatiq.probe import probe_from_url

    probe = probe_from_url(url)
    probe.cleanup([QUEUE])
    probe.close()
    return url


@pytest.fixture(params=["redis", "amqp"])
def any_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs on both brokers."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ledger.sqlite3"
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(path))
    from tests.apps.ledger import connect

    connect(str(path)).close()
    return path


def effect_done(ledger: Path, key: str) -> bool:
    db = sqlite3.connect(ledger, timeout=30)
    try:
        row = db.execute("SELECT 1 FROM effects WHERE key = ?", (key,)).fetchone()
    finally:
        db.close()
    return row is not None
