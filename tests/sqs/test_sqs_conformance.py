"""The conformance suite end to end on SQS (moto in server mode), with real worker processes.

Expectations declared for SQS on moto: everything claimed passes; priorities are not claimed
and must be refused at enqueue. No check is declared as an expected failure: the differences
between moto and SQS (stale receipt handles accepted, no StartMessageMoveTask) are ones the
adapter does not rely on (see docs/adapters/sqs.md).

Broker control (`tests.servers.control.relay`): moto keeps its queues in memory, so the test
server's "restart" cuts and resumes a TCP proxy in front of it; the restart and outage checks
see the endpoint go away and come back with its queues, as they would with SQS itself.

The two runs with another store (none; DynamoDB) run the checks whose scenarios go through the
store (keys, job records, delayed sends and their index, dead letters, migration markers,
stats), not the whole suite again: the rest (volume, crashes, shutdowns, outages) is the same
SQS code with the same store calls and runs in the first test. A whole run on moto takes 6-8
minutes on a loaded 2-core machine, and three of them kept the project's CI past its budget.

Settings: a 4 s lease instead of the suite's 2 s. Every lease operation is an HTTP round trip
to moto, which scans the queue on each call; on a loaded 2-core machine those took a large
enough share of 2 s that a lease ran out before the worker extended it (a job run twice
without a fault).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jobkit_sqs import parse_url
from jobkit_sqs.client import SqsClient
from jobkit_sqs.queues import QueueDirectory

from tests.servers.control import relay
from tests.servers.moto import MotoServer

pytestmark = pytest.mark.slow


def test_the_suite_passes_on_sqs_with_priorities_refused(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    url = moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'jobs.db'}")
    report = tmp_path / "report.json"
    with relay(moto) as control:
        proc = subprocess.run(
            [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
             "--workdir", str(tmp_path / "work"), "--json", str(report), "--lease", "4",
             "--broker-control", control],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
            timeout=500,
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
    left = QueueDirectory(parse_url(url)).known(SqsClient(parse_url(url)))
    assert left == []  # the suite deleted the queues it made


STORE_CHECKS = (
    "delivery.*", "duplicate.*", "retry.*", "dlq.*", "delay.*", "priority.*", "unsupported.*",
    "migration.*", "stats.*", "backend.*", "cli.*", "contract.*",
)  # fmt: skip
"""The checks whose scenarios go through the job store (see the module docstring)."""


def _suite(url: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    report = tmp_path / "report.json"
    only = [arg for check in STORE_CHECKS for arg in ("--only", check)]
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
         "--workdir", str(tmp_path / "work"), "--json", str(report), "--lease", "4", *only],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()},
        timeout=500,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc, {c["id"]: c["outcome"] for c in data.get("checks", [])}


def _without_broker_control(outcomes: dict[str, str]) -> set[str]:
    return {
        outcomes.pop(k) for k in list(outcomes) if k.startswith(("durability.broker", "outage."))
    }


def test_the_suite_passes_on_sqs_without_a_store_with_keys_refused(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    proc, outcomes = _suite(moto.url(prefix=prefix), tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes.pop("priority.order") == "refused"
    assert outcomes.pop("duplicate.effect_once_with_key") == "refused"
    assert _without_broker_control(outcomes) <= {"not run"}
    assert set(outcomes.values()) == {"pass"}, outcomes


def test_the_suite_passes_on_sqs_with_a_dynamodb_store_with_keys_and_results(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    url = moto.url(prefix=prefix, store=f"dynamodb://{prefix}jobs")
    proc, outcomes = _suite(url, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert outcomes.pop("priority.order") == "refused"
    assert outcomes.pop("duplicate.effect_once_with_key") == "pass"
    assert outcomes.pop("backend.job_record") == "pass"
    assert _without_broker_control(outcomes) <= {"not run"}
    assert set(outcomes.values()) == {"pass"}, outcomes
