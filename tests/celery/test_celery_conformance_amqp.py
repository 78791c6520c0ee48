"""The conformance suite against Celery on a real rabbitmq-server, with real worker processes:
with a Redis store (hardened settings, every check passes but those declared below), and
without a store as the README's URL is written (keys refused).

The run with a store gets broker control (`tests.servers.control.relay`): it restarts the
broker between enqueue and run, and stops it for an outage while a worker serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.celery.conformance_runs import all_pass, fresh, outcomes_of, run
from tests.servers.control import relay
from tests.servers.rabbitmq import RabbitServer
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.slow

# AMQP 0-9-1 shows no client the messages other connections hold unacked: celery+amqp does
# not claim in-flight counts (`Capabilities.in_flight_visible`), and the suite says so.
AMQP_UNCLAIMED = ("stats.in_flight",)


def test_the_suite_passes_on_celery_rabbitmq(
    rabbit_server: RabbitServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    fresh(redis_server)
    with relay(rabbit_server) as control:
        code, data, out = run(
            f"celery+{rabbit_server.url}?store={redis_server.url}/1", tmp_path,
            "--broker-control", control,
        )  # fmt: skip
    assert code == 0, out
    assert all_pass(data, unclaimed=AMQP_UNCLAIMED), out


def test_the_suite_passes_on_celery_rabbitmq_without_a_store_with_keys_refused(
    rabbit_server: RabbitServer, tmp_path: Path
) -> None:
    # the README's URL as written: no store=, so no idempotency keys and no job records
    code, data, out = run(f"celery+{rabbit_server.url}", tmp_path)
    assert code == 0, out
    outcomes = outcomes_of(data)
    assert outcomes.pop("duplicate.effect_once_with_key") == "refused", out
    # without a store, a job stopped at its hard limit could not be counted more than once
    assert outcomes.pop("timeout.stopped_and_counted") == "refused", out
    outcomes.pop("migration.round_trip_exact")  # a migration target only without a store
    transport = {outcomes.pop(k) for k in list(outcomes) if k.startswith("contract.")}
    assert {outcomes.pop(k) for k in AMQP_UNCLAIMED} == {"unclaimed"}, out
    broker = {
        outcomes.pop(k) for k in list(outcomes) if k.startswith(("durability.broker", "outage."))
    }
    assert transport == {"n/a"}, out
    assert broker <= {"not run"}, out  # no --broker-control in this run
    assert set(outcomes.values()) == {"pass"}, out
