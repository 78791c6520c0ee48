"""Fixtures for the jobkit-rabbitmq tests: one real rabbitmq-server per test session.

The server is started by the tests on loopback ports of its own and stopped by PID. A server
that cannot start makes the tests that need it fail (error), never skip. Every test works on
queues under a prefix of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.servers.rabbitmq import RabbitServer, start_rabbitmq


@pytest.fixture(scope="session")
def rabbit() -> Iterator[RabbitServer]:
    try:
        server = start_rabbitmq()
    except RuntimeError as exc:
        pytest.fail(f"cannot start rabbitmq-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"jk{uuid.uuid4().hex[:8]}."


def url_of(server: RabbitServer, prefix: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix, "heartbeat": "2", **options}.items())
    return f"amqp://guest:guest@127.0.0.1:{server.port}/%2F?{query}"
