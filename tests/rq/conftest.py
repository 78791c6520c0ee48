"""Fixtures for the RQ adapter tests: one real redis-server per session, on a 127.0.0.1 port of
its own, stopped by PID at the end. A server that cannot start fails the tests, never skips.
The ledger and the app come from tests/conftest.py (`ledger_path`, `app`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

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


def flush(server: RedisServer) -> None:
    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()


@pytest.fixture(params=["fork", "simple"])
def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """An rq+redis URL on a flushed server, once per RQ worker class (for the shared `app`
    fixture, which runs `tests.apps.ledger` on it)."""
    flush(redis_server)
    return f"rq+{redis_server.url}/0?worker={request.param}"


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
