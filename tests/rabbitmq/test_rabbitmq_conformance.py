"""The conformance suite end to end on a real rabbitmq-server, with real worker processes.

Expectations declared for RabbitMQ: everything claimed passes. Quorum queues (the default)
claim no priorities, which must be refused at enqueue; classic queues claim and pass them.
Heartbeats of 2 s, so that a SIGSTOPped worker's connection is closed by the broker within a
few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rabbitmq.conftest import url_of
from tests.servers.control import relay
from tests.servers.rabbitmq import RabbitServer

pytestmark = pytest.mark.slow


# What differs on classic queues (priorities, attempts counted without x-delivery-count, no
# delivery limit, requeues, delays, dead letters, export): the rest of the suite exercises the
# same code as on quorum queues, and runs once, there.
CLASSIC_CHECKS = (
    "crash.*", "lease.*", "retry.*", "dlq.*", "timeout.*", "delay.*", "priority.order",
    "poison.*", "contract.*", "migration.*",
)  # fmt: skip


def run_suite(
    url: str, tmp_path: Path, control: str | None, only: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Runs the suite's CLI on `url` (with broker control `control`, and only the checks
    `only` when given); returns its JSON report (fails on a non-zero exit)."""
    report = tmp_path / "report.json"
    extra = [arg for check in only for arg in ("--only", check)]
    extra += ["--broker-control", control] if control is not None else []
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
         "--workdir", str(tmp_path / "work"), "--json", str(report), *extra],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(report.read_text())
    assert data["conformant"] is True
    return data


def test_the_suite_passes_on_rabbitmq_quorum_queues_with_priorities_refused(
    rabbit_server: RabbitServer, prefix: str, tmp_path: Path
) -> None:
    with relay(rabbit_server) as control:
        data = run_suite(
            url_of(rabbit_server, prefix, store=f"sqlite:///{tmp_path / 'j.db'}"), tmp_path, control
        )
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    # AMQP 0-9-1 shows no client what other connections hold unacked: not claimed, and the
    # ready count is still held to at most the jobs waiting (stats.counts passes)
    assert outcomes.pop("stats.in_flight") == "unclaimed"
    assert outcomes.pop("priority.order") == "refused"
    assert set(outcomes.values()) == {"pass"}, outcomes
    recovery = {c["id"]: c["counts"].get("recovery_max_s") for c in data["checks"]}
    assert recovery["crash.redelivered"] is not None


def test_the_suite_passes_on_rabbitmq_classic_queues_with_priorities(
    rabbit_server: RabbitServer, prefix: str, tmp_path: Path
) -> None:
    url = url_of(
        rabbit_server, prefix, queue_type="classic", store=f"sqlite:///{tmp_path / 'j.db'}"
    )
    data = run_suite(url, tmp_path, None, only=CLASSIC_CHECKS)
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    assert outcomes.pop("priority.order") == "pass"
    assert outcomes.pop("migration.round_trip_exact") == "pass"
    assert set(outcomes.values()) == {"pass"}, outcomes
