"""The conformance suite against jobkit on Dramatiq on a real redis-server: the hardened
settings (jobkit's) pass every check.

The suite gets broker control (`tests.servers.control.relay`): it restarts the broker between
enqueue and run, and stops it for an outage while a worker serves. The test redis-server
persists (append-only file), so its URL declares ``persistent=yes``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dramatiq._conformance import outcomes
from tests.dramatiq.conftest import flush
from tests.servers.control import relay
from tests.servers.redis import RedisServer
from tests.workers import run_conformance

pytestmark = pytest.mark.slow


def test_the_suite_passes_on_dramatiq_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    flush(redis_server)
    url = f"dramatiq+{redis_server.url}/0?persistent=yes&store=sqlite:///{tmp_path / 'jobs.db'}"
    with relay(redis_server) as control:
        code, data, out = run_conformance(url, tmp_path, "--broker-control", control)
    assert code == 0, out
    found = outcomes(data)
    assert found.pop("priority.order") == "refused", out  # Dramatiq's Redis has none
    assert set(found.values()) == {"pass"}, out
