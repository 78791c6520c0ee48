"""The conformance suite run against Dramatiq's native defaults on Redis must fail the crash and
poison checks: that proves the suite catches what those defaults lose (a killed worker's job not
back for 60-100 s or more, a poison message stranded in an ack set)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dramatiq._conformance import outcomes
from tests.dramatiq.conftest import flush
from tests.servers.redis import RedisServer
from tests.workers import run_conformance

pytestmark = pytest.mark.slow


def test_the_suite_catches_dramatiq_native_defaults_on_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    flush(redis_server)
    code, data, out = run_conformance(
        f"dramatiq+{redis_server.url}/0?profile=native&store=sqlite:///{tmp_path / 'jobs.db'}",
        tmp_path,
        "-k", "crash.redelivered_within_bound", "-k", "poison.dead_lettered_worker_survives",
        "--timeout", "20",
    )  # fmt: skip
    assert code == 1, out
    found = outcomes(data)
    # 60 s heartbeat and 0.1 % maintenance: the killed worker's jobs are not back in time
    assert found["crash.redelivered_within_bound"] in ("fail", "error"), out
    # the undecodable message stays in the consumer's ack set: never dead-lettered
    assert found["poison.dead_lettered_worker_survives"] in ("fail", "error"), out
