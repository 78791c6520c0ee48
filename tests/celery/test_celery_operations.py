"""Middleware, tracing, logs and metrics on Celery+Redis: jobkit's hooks run in Celery's pool
children exactly as in jobkit's own job processes (tests.apps.observed)."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.metrics import samples
from tests.apps import observed as O
from tests.operations import (
    hooks,
    run_burst,
    scrape,
    serving,
    start_observed_worker,
    traced_run,
)
from tests.servers import free_port
from tests.waiting import wait_until
from tests.workers import kill_group

pytestmark = pytest.mark.slow


@pytest.fixture
def url(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("JOBKIT_TEST_HOOKS", str(tmp_path / "hooks.jsonl"))
    O.app.use(redis_url)
    O.memory.clear()
    yield redis_url
    O.app.close()


def test_one_trace_runs_from_the_producer_span_into_the_celery_job_span(tmp_path, url):
    _, _, run, job_id = traced_run(url, tmp_path, 11)  # asserts trace id and parent
    assert run["attributes"]["jobkit.outcome"] == "succeeded"
    assert run["attributes"]["jobkit.job.id"] == job_id


def test_celery_runs_report_retry_then_success_and_dead_with_reason(tmp_path, url):
    flaky = O.flaky.enqueue(12)
    hopeless = O.hopeless.enqueue(13)
    log = tmp_path / "worker.log"
    hook_file = tmp_path / "hooks.jsonl"
    # not --burst: while the retry waits out its delay the queue has nothing ready
    with serving(url, log, "-c", "1"):
        assert flaky.result(timeout=60) == 12
        wait_until(lambda: hooks(hook_file, id=hopeless.id, hook="after_run"), timeout=60)
    runs = [
        (e["attempt"], e["status"]) for e in hooks(hook_file, id=flaky.id, hook="after_run", m="a")
    ]
    assert runs == [(1, "retrying"), (2, "succeeded")]
    (dead,) = hooks(hook_file, id=hopeless.id, hook="after_run", m="a")
    assert dead["status"] == "dead"
    assert "never works: 13" in dead["reason"]
    order = [e["m"] for e in hooks(hook_file, id=flaky.id, hook="before_run")]
    assert order == ["a", "b", "a", "b"]
    assert "middleware Broken.before_run failed" in log.read_text()


def test_celery_json_log_lines_carry_the_job(tmp_path, url):
    handle = O.ok.enqueue(14)
    log = tmp_path / "worker.log"
    run_burst(url, log, "--log-format", "json")
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (mine,) = [e for e in lines if e["message"] == "user line for 14"]
    assert (mine["job_id"], mine["attempt"]) == (handle.id, 1)


def test_celery_worker_metrics_count_jobs_of_its_pool_children(tmp_path, url):
    port = free_port()
    log = tmp_path / "worker.log"
    proc = start_observed_worker(url, "-c", "2", "--metrics-port", str(port), log=log)
    try:
        for handle in [O.ok.enqueue(i) for i in range(3)]:
            handle.result(timeout=60)
        ok = ("jobkit_jobs_succeeded_total", frozenset({("job", O.ok.name), ("queue", "obs")}))
        wait_until(lambda: samples(scrape(port)).get(ok) == 3.0, timeout=30, what="3 counted")
    finally:
        kill_group(proc, signal.SIGTERM)
        proc.wait(timeout=60)
