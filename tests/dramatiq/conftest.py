"""Fixtures for the Dramatiq adapter tests: the real redis-server and rabbitmq-server (one each
per session, on 127.0.0.1 ports of their own, stopped by PID at the end; the rabbitmq-server is
`tests.conftest`'s), the ledger and `effect_done` are the Celery tests' (`tests.celery.conftest`);
the URLs are Dramatiq's.

A server that cannot start makes the tests that need it fail (error), never skip.
"""

from __future__ import annotations

import pytest
import redis

from tests.celery.conftest import effect_done, ledger, redis_server
from tests.servers.rabbitmq import RabbitServer
from tests.servers.redis import RedisServer

__all__ = ["effect_done", "flush", "ledger", "redis_server"]

QUEUE = "work"  # the queue of tests.apps.ledger's jobs


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
    rabbit_server.delete_queues(QUEUE)  # another adapter's tests may have declared it otherwise
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
