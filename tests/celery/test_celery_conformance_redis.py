"""The conformance suite against Celery on a real redis-server, with real worker processes.

Hardened settings (jobkit's) must pass every check; Celery's native defaults (early ack) must
fail ``crash.no_loss``: that proves the suite catches the loss Celery's defaults cause.

The suite gets broker control (`tests.servers.control.relay`): it restarts the broker between
enqueue and run, and stops it for an outage while a worker serves. The test redis-server
persists (append-only file), so its URL declares ``persistent=yes``. (RabbitMQ: in
`test_celery_conformance_amqp`; a module each, so that two test workers run them.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.celery.conformance_runs import all_pass, fresh, outcomes_of, run
from tests.servers.control import relay
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.slow


def test_the_suite_passes_on_celery_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    fresh(redis_server)
    with relay(redis_server) as control:
        code, data, out = run(
            f"celery+{redis_server.url}/0?persistent=yes", tmp_path, "--broker-control", control
        )
    assert code == 0, out
    assert all_pass(data), out


def test_the_suite_catches_celery_native_defaults_losing_jobs(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    fresh(redis_server)
    code, data, out = run(
        f"celery+{redis_server.url}/0?profile=native", tmp_path,
        "-k", "crash", "-k", "delivery.no_loss", "--timeout", "20",
    )  # fmt: skip
    assert code == 1, out
    # The crashed jobs never come back: the check fails (or its scenario's wait for them runs
    # out, an error), and so does the check that they are redelivered.
    outcomes = outcomes_of(data)
    assert outcomes["crash.no_loss"] in ("fail", "error"), out
    assert outcomes["crash.redelivered"] in ("fail", "error"), out
