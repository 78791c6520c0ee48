"""Middleware around enqueue, each run and the worker, with real `jobkit worker` processes on
SQLite (tests.apps.observed: recorders "a" and "b", a middleware that raises in every hook,
OpenTelemetry tracing)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import JobState
from tests.apps import observed as O
from tests.operations import hooks, run_burst, serving

pytestmark = pytest.mark.slow


@pytest.fixture
def hook_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Hooks of this process and of the workers it starts are recorded here."""
    path = tmp_path / "hooks.jsonl"
    monkeypatch.setenv("JOBKIT_TEST_HOOKS", str(path))
    O.app.use(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield path
    O.app.close()


def burst(tmp_path: Path) -> str:
    """Run a worker until the queue is empty; return its log."""
    log = tmp_path / "worker.log"
    run_burst(f"sqlite:///{tmp_path / 'jobs.db'}", log)
    return log.read_text()


def test_hooks_run_in_registration_order_before_and_in_reverse_after(tmp_path, hook_file):
    handle = O.ok.enqueue(1)
    burst(tmp_path)
    assert handle.result(timeout=10) == 1
    order = [(e["hook"], e["m"]) for e in hooks(hook_file, id=handle.id)]
    assert order == [
        ("before_enqueue", "a"),
        ("before_enqueue", "b"),
        ("after_enqueue", "b"),
        ("after_enqueue", "a"),
        ("before_run", "a"),
        ("before_run", "b"),
        ("after_run", "b"),
        ("after_run", "a"),
    ]
    worker = [(e["hook"], e["m"]) for e in hooks(hook_file) if e["hook"].startswith("worker_")]
    assert worker == [
        ("worker_started", "a"),
        ("worker_started", "b"),
        ("worker_stopped", "b"),
        ("worker_stopped", "a"),
    ]


def test_producer_hooks_run_here_and_run_hooks_in_a_job_process(tmp_path, hook_file):
    handle = O.ok.enqueue(2)
    burst(tmp_path)
    assert handle.result(timeout=10) == 2
    (enqueued,) = hooks(hook_file, id=handle.id, hook="before_enqueue", m="a")
    (ran,) = hooks(hook_file, id=handle.id, hook="before_run", m="a")
    (started,) = hooks(hook_file, hook="worker_started", m="a")
    assert enqueued["pid"] == os.getpid()
    assert ran["pid"] not in (os.getpid(), started["pid"])


def test_headers_added_by_before_enqueue_reach_the_job(tmp_path, hook_file):
    handle = O.ok.enqueue(3)
    burst(tmp_path)
    (ran,) = hooks(hook_file, id=handle.id, hook="before_run", m="b")
    assert ran["headers"]["x-a"] == "1"
    assert ran["headers"]["x-b"] == "1"
    assert "traceparent" in ran["headers"]


def test_a_hook_that_raises_is_logged_and_loses_no_job(tmp_path, hook_file):
    handle = O.ok.enqueue(4)
    log = burst(tmp_path)
    assert handle.result(timeout=10) == 4
    assert handle.state is JobState.SUCCEEDED
    for hook in ("worker_started", "before_run", "after_run"):
        assert f"middleware Broken.{hook} failed" in log
    assert "RuntimeError: broken before_run" in log


def test_after_run_reports_a_retry_with_its_delay_then_the_success(tmp_path, hook_file):
    handle = O.flaky.enqueue(5)
    # not --burst: while the retry waits out its delay the queue has nothing ready
    with serving(f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "worker.log", "-c", "1"):
        assert handle.result(timeout=60) == 5
    runs = [
        (e["attempt"], e["status"], e["delay"])
        for e in hooks(hook_file, id=handle.id, hook="after_run", m="a")
    ]
    assert runs == [(1, "retrying", 0.1), (2, "succeeded", None)]


def test_after_run_reports_a_dead_job_with_its_reason(tmp_path, hook_file):
    handle = O.hopeless.enqueue(6)
    burst(tmp_path)
    (dead,) = hooks(hook_file, id=handle.id, hook="after_run", m="a")
    assert dead["status"] == "dead"
    assert dead["reason"] == "permanent error: Reject: never works: 6"
    assert handle.state is JobState.DEAD


def test_a_time_limit_is_reported_by_the_worker_that_stopped_the_job(tmp_path, hook_file):
    handle = O.sleepy.enqueue(60.0)
    burst(tmp_path)
    (stopped,) = hooks(hook_file, id=handle.id, hook="after_run", m="a")
    (started,) = hooks(hook_file, hook="worker_started", m="a")
    assert (stopped["status"], stopped["time_limit"]) == ("dead", True)
    assert "TimeLimitExceeded" in stopped["reason"]
    assert stopped["pid"] == started["pid"]  # the job process was killed: the supervisor says
