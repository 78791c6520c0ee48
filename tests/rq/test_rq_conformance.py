"""The conformance suite against RQ on a real redis-server, both RQ worker classes.

jobkit's settings must pass every check; RQ's native defaults (``profile=native``: no scheduler,
RQ's 60 s+ heartbeat TTL and 10-minute registry cleaning) must fail the delayed-job and the
crash checks: that proves the suite catches the jobs RQ's defaults never run.

`SimpleWorker` runs the whole suite with broker control (restart between enqueue and run, an
outage while a worker serves; the test redis-server persists, so the URL says
``persistent=yes``). The forking `Worker` (a fork per job: a few times slower on the 5,000-job
volume soak) runs every check but the soak.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.rq.conftest import flush
from tests.servers.control import relay
from tests.servers.redis import RedisServer
from tests.workers import run_conformance

pytestmark = pytest.mark.slow

# what depends on the worker class: the work-horse, its heartbeat, its time limit, its signals
FORK_CHECKS = ("crash", "lease", "retry", "delay", "poison", "shutdown", "timeout")


def _outcomes(data: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in data.get("checks", [])}


def _all_pass(data: dict[str, Any]) -> bool:
    """Every check passes except the Transport contract's (RQ implements Backend: n/a) and the
    priority order (RQ has no priorities: refused at enqueue, as declared)."""
    outcomes = _outcomes(data)
    n_a = {outcomes.pop(k) for k in list(outcomes) if k.startswith("contract.")}
    refused = {outcomes.pop(k) for k in list(outcomes) if k.startswith("priority.")}
    return n_a <= {"n/a"} and refused <= {"refused"} and set(outcomes.values()) == {"pass"}


def test_the_suite_passes_on_rq_simple_worker(redis_server: RedisServer, tmp_path: Path) -> None:
    flush(redis_server)
    url = f"rq+{redis_server.url}/0?worker=simple&persistent=yes"
    with relay(redis_server) as control:
        code, data, out = run_conformance(url, tmp_path, "--broker-control", control)
    assert code == 0, out
    assert _all_pass(data), out


def test_the_suite_passes_on_rq_forking_worker(redis_server: RedisServer, tmp_path: Path) -> None:
    flush(redis_server)
    url = f"rq+{redis_server.url}/0?worker=fork"
    only = [arg for check in FORK_CHECKS for arg in ("-k", check)]
    code, data, out = run_conformance(url, tmp_path, *only)
    assert code == 0, out
    assert _all_pass(data), out


def test_the_suite_catches_rq_native_defaults(redis_server: RedisServer, tmp_path: Path) -> None:
    flush(redis_server)
    code, data, out = run_conformance(
        f"rq+{redis_server.url}/0?profile=native", tmp_path,
        "-k", "crash.redelivered", "-k", "delay.on_time", "--timeout", "20",
    )  # fmt: skip
    assert code == 1, out
    outcomes = _outcomes(data)
    # the delayed job waits in the ScheduledJobRegistry for a scheduler that never runs
    assert outcomes["delay.on_time"] in ("fail", "error"), out
    # the killed worker's job stays in the StartedJobRegistry: RQ's 60 s+ TTL and 10-minute
    # cleaning are beyond the suite's 20 s wait
    assert outcomes["crash.redelivered"] in ("fail", "error"), out
