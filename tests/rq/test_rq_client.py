"""The RQ backend's Redis client: cheap connections, since RQ's forking worker makes one per job."""

from __future__ import annotations

import importlib.metadata

import pytest
import redis
from jobkit_rq._client import redis_client

from tests.servers.redis import RedisServer


def test_a_new_connection_does_not_read_package_metadata_and_tells_the_server_the_same_version(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis_client(f"{redis_server.url}/0")
    looked_up: list[str] = []

    def version(name: str) -> str:  # each call reads the installed packages' metadata
        looked_up.append(name)
        return "0.0.0"

    monkeypatch.setattr(importlib.metadata, "version", version)
    connection = client.connection_pool.make_connection()  # what a fresh work-horse does
    connection.connect()
    connection.disconnect()
    client.close()
    assert looked_up == []
    # what CLIENT SETINFO tells a server that takes it (redis-server 7.2 and later)
    assert connection.driver_info.formatted_name == "redis-py"
    assert connection.driver_info.lib_version == redis.__version__
