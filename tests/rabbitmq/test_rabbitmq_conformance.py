"""The conformance suite end to end on a real rabbitmq-server, with real worker processes.

Expectations declared for RabbitMQ (quorum queues, the default): everything claimed passes;
priorities are not claimed on quorum queues and must be refused at enqueue. Heartbeats of 2 s,
so that a SIGSTOPped worker's connection is closed by the broker within a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rabbitmq.conftest import url_of
from tests.servers.rabbitmq import RabbitServer

pytestmark = pytest.mark.slow


def test_the_suite_passes_on_rabbitmq_with_priorities_refused(
    rabbit_server: RabbitServer, prefix: str, tmp_path: Path
) -> None:
    url = url_of(rabbit_server, prefix, store=f"sqlite:///{tmp_path / 'jobs.db'}")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
         "--workdir", str(tmp_path / "work"), "--json", str(report)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=400,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    data = json.loads(report.read_text())
    assert data["conformant"] is True
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    assert outcomes.pop("priority.order") == "refused"
    assert set(outcomes.values()) == {"pass"}, outcomes
    recovery = {c["id"]: c["counts"].get("recovery_max_s") for c in data["checks"]}
    assert recovery["crash.redelivered"] is not None
