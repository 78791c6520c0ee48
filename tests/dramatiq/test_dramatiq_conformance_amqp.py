"""The conformance suite against jobkit on Dramatiq on a real rabbitmq-server: the hardened
settings pass every check but the declared expected failures (`AMQP_XFAILS`).

The suite gets broker control (`tests.servers.control.relay`): it restarts the broker between
enqueue and run, and stops it for an outage while a worker serves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dramatiq._conformance import outcomes
from tests.servers.control import relay
from tests.servers.rabbitmq import RabbitServer
from tests.workers import run_conformance

pytestmark = pytest.mark.slow

# AMQP 0-9-1 shows no client the messages other connections hold unacked (in flight, and the
# delayed messages a worker holds until due): not claimed (`Capabilities.in_flight_visible`).
AMQP_UNCLAIMED = ("stats.in_flight",)


def test_the_suite_passes_on_dramatiq_rabbitmq(rabbit_server: RabbitServer, tmp_path: Path) -> None:
    url = f"dramatiq+{rabbit_server.url}?store=sqlite:///{tmp_path / 'jobs.db'}"
    with relay(rabbit_server) as control:
        code, data, out = run_conformance(url, tmp_path, "--broker-control", control)
    assert code == 0, out
    found = outcomes(data)
    assert {found.pop(k) for k in AMQP_UNCLAIMED} == {"unclaimed"}, out
    assert set(found.values()) == {"pass"}, out
