"""The conformance suite against Celery on a real redis-server and a real rabbitmq-server.

Hardened settings (jobkit's) must pass every check; Celery's native defaults (early ack) must
fail ``crash.no_loss``: that proves the suite catches the loss Celery's defaults cause.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.servers.rabbitmq import RabbitServer
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.slow


def _run(url: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
         "--workdir", str(tmp_path / "work"), "--json", str(report), *extra],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr


def _outcomes(data: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in data.get("checks", [])}


def _fresh(server: RedisServer) -> None:
    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()


def test_the_suite_passes_on_celery_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    _fresh(redis_server)
    code, data, out = _run(f"celery+{redis_server.url}/0", tmp_path)
    assert code == 0, out
    assert set(_outcomes(data).values()) == {"pass"}, out


def test_the_suite_passes_on_celery_rabbitmq(
    rabbit_server: RabbitServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    _fresh(redis_server)
    code, data, out = _run(f"celery+{rabbit_server.url}?store={redis_server.url}/1", tmp_path)
    assert code == 0, out
    assert set(_outcomes(data).values()) == {"pass"}, out


def test_the_suite_catches_celery_native_defaults_losing_jobs(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    _fresh(redis_server)
    code, data, out = _run(
        f"celery+{redis_server.url}/0?profile=native", tmp_path,
        "-k", "crash", "-k", "delivery.no_loss", "--timeout", "20",
    )  # fmt: skip
    assert code == 1, out
    # The crashed jobs never come back: the check fails (or its scenario's wait for them runs
    # out, an error), and so does the check that they are redelivered.
    outcomes = _outcomes(data)
    assert outcomes["crash.no_loss"] in ("fail", "error"), out
    assert outcomes["crash.redelivered"] in ("fail", "error"), out
