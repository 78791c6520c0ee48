"""Fixtures for the jobkit-rabbitmq tests. The rabbitmq-server is the session's
(`rabbit_server`, tests/conftest.py), started by the tests on loopback ports of their own and
stopped by PID. Every test works on queues under a prefix of its own.
"""

from __future__ import annotations

import uuid

import pytest

from tests.servers.rabbitmq import RabbitServer


@pytest.fixture
def prefix() -> str:
    return f"jk{uuid.uuid4().hex[:8]}."


def url_of(server: RabbitServer, prefix: str, **options: str) -> str:
    # dead_letter_retry: what tests/servers/rabbitmq.py configures the server with (5 s)
    base = {"prefix": prefix, "heartbeat": "2", "dead_letter_retry": "5"}
    query = "&".join(f"{k}={v}" for k, v in {**base, **options}.items())
    return f"amqp://guest:guest@127.0.0.1:{server.port}/%2F?{query}"
