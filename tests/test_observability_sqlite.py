"""Logs, traces and metrics of a real `jobkit worker` on SQLite (tests.apps.observed)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind

from jobkit.metrics import samples
from tests.apps import observed as O
from tests.operations import run_burst, scrape, start_observed_worker, traced_run
from tests.servers import free_port
from tests.waiting import wait_until
from tests.workers import jobkit_cli, kill_group

pytestmark = pytest.mark.slow


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    backend = f"sqlite:///{tmp_path / 'jobs.db'}"
    O.app.use(backend)
    O.memory.clear()
    yield backend
    O.app.close()


def test_json_log_lines_parse_and_carry_the_job_in_the_users_own_lines(tmp_path, url):
    handle = O.ok.enqueue(7)
    log = tmp_path / "worker.log"
    run_burst(url, log, "--log-format", "json")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    (mine,) = [e for e in lines if e["message"] == "user line for 7"]
    assert mine["logger"] == "tests.user"
    assert (mine["job_id"], mine["job_name"], mine["queue"], mine["attempt"]) == (
        handle.id,
        "tests.apps.observed.ok",
        "obs",
        1,
    )


def test_text_log_lines_carry_the_job_fields(tmp_path, url):
    handle = O.ok.enqueue(8)
    log = tmp_path / "worker.log"
    run_burst(url, log)
    (line,) = [x for x in log.read_text().splitlines() if "user line for 8" in x]
    assert f"job=tests.apps.observed.ok id={handle.id} queue=obs attempt=1" in line


def test_the_supervisors_lines_about_a_job_carry_it(tmp_path, url):
    handle = O.sleepy.enqueue(60.0)
    log = tmp_path / "worker.log"
    run_burst(url, log, "--log-format", "json")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    (stopped,) = [e for e in lines if "ran past its time limit" in e["message"]]
    assert stopped["logger"] == "jobkit.worker.supervisor"
    assert (stopped["job_id"], stopped["queue"], stopped["attempt"]) == (handle.id, "obs", 1)


def test_worker_loggers_are_named_per_module(tmp_path, url):
    O.hopeless.enqueue(9)
    log = tmp_path / "worker.log"
    run_burst(url, log, "--log-format", "json", "-v")
    loggers = {json.loads(line)["logger"] for line in log.read_text().splitlines()}
    assert {"jobkit.cli.worker", "jobkit.middleware"} <= loggers
    assert "jobkit.worker" not in loggers


def test_one_trace_runs_from_the_producer_span_into_the_job_span(tmp_path, url):
    http, enqueue, run, job_id = traced_run(url, tmp_path, 10)  # asserts trace id and parent
    assert enqueue.parent is not None and enqueue.parent.span_id == http.get_span_context().span_id
    assert enqueue.kind is SpanKind.PRODUCER
    assert run["attributes"] == {
        "messaging.system": "jobkit",
        "messaging.destination": "obs",
        "jobkit.job.id": job_id,
        "jobkit.job.name": "tests.apps.observed.ok",
        "jobkit.attempt": 1,
        "jobkit.outcome": "succeeded",
    }


def test_metrics_count_jobs_and_the_dlq_gauge_matches_status(tmp_path, url):
    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_observed_worker(url, "-c", "2", "--metrics-port", str(port), log=log)
    try:
        handles = [O.ok.enqueue(i) for i in range(3)] + [O.hopeless.enqueue(99)]
        for handle in handles[:3]:
            handle.result(timeout=60)

        def counted() -> dict[tuple[str, frozenset[tuple[str, str]]], float] | None:
            found = samples(scrape(port))
            dead = (
                "jobkit_jobs_dead_total",
                frozenset({("job", O.hopeless.name), ("queue", "obs")}),
            )
            return found if found.get(dead) == 1.0 else None

        found = wait_until(counted, timeout=60, what="the dead job counted")
        ok = frozenset({("job", O.ok.name), ("queue", "obs")})
        assert found[("jobkit_jobs_started_total", ok)] == 3.0
        assert found[("jobkit_jobs_succeeded_total", ok)] == 3.0
        assert found[("jobkit_job_run_seconds_count", ok)] == 3.0
        assert found[("jobkit_job_wait_seconds_count", ok)] == 3.0
        assert found[("jobkit_jobs_in_flight", ok)] == 0.0
        status = json.loads(jobkit_cli(url, "status", "--json", "-q", "obs").stdout)
        queue = frozenset({("queue", "obs")})
        assert found[("jobkit_queue_dead", queue)] == status[0]["dead"] == 1
        assert found[("jobkit_queue_ready", queue)] == status[0]["ready"] == 0
    finally:
        kill_group(proc, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()
