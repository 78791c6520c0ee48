"""Helpers for the operations tests (middleware, metrics, tracing, logs): a worker with extra
environment, the hook and span files of `tests.apps.observed`, a free port, a scrape."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry.trace import format_span_id, format_trace_id

from tests.apps import observed as O
from tests.apps.observed import read_lines
from tests.workers import ROOT, kill_group

APP = "tests.apps.observed:app"
COMMAND = (sys.executable, "-m", "jobkit.cli.main")


def start_observed_worker(
    backend: str, *args: str, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`jobkit worker` for the observed app; stderr to `log`; our environment plus `env`."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [*COMMAND, "--app", APP, "--backend", backend, "worker", "-q", "obs", *args],
            cwd=ROOT,
            env=full_env,
            stderr=stderr,
            start_new_session=True,
        )


def run_burst(backend: str, log: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
    """An observed worker with one job process until queue obs is empty; it must exit 0."""
    proc = start_observed_worker(backend, "-c", "1", "--burst", *args, log=log, env=env)
    try:
        assert proc.wait(timeout=120) == 0, log.read_text()
    finally:
        kill_group(proc)


@contextmanager
def serving(backend: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """An observed worker serving queue obs until the block ends; then SIGTERM, and it must
    exit 0 (a graceful stop)."""
    proc = start_observed_worker(backend, *args, log=log)
    try:
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def traced_run(backend: str, tmp_path: Path, x: int) -> tuple[Any, Any, dict[str, Any], str]:
    """Enqueue ``ok(x)`` inside an HTTP-style span and run it with a burst worker that writes
    its spans to a file. Returns the HTTP span, the enqueue span (in-memory exporter), the run
    span (as the SDK's JSON) and the job id."""
    spans_file = tmp_path / "spans.jsonl"
    with O.tracer.start_as_current_span("POST /orders") as http:
        handle = O.ok.enqueue(x)
    run_burst(backend, tmp_path / "worker.log", env={"JOBKIT_TEST_SPANS": str(spans_file)})
    assert handle.result(timeout=10) == x
    (enqueue,) = [s for s in O.memory.get_finished_spans() if s.name.startswith("enqueue ")]
    (run,) = [s for s in read_lines(str(spans_file)) if s["name"] == "run tests.apps.observed.ok"]
    assert run["context"]["trace_id"] == "0x" + format_trace_id(http.get_span_context().trace_id)
    assert run["parent_id"] == "0x" + format_span_id(enqueue.context.span_id)
    return http, enqueue, run, handle.id


def hooks(path: Path, **match: Any) -> list[dict[str, Any]]:
    """The hook calls recorded in `path` whose fields equal `match`, in order."""
    return [e for e in read_lines(str(path)) if all(e.get(k) == v for k, v in match.items())]


def scrape(port: int) -> str:
    """The text of http://127.0.0.1:PORT/metrics, or "" while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text
    except OSError:
        return ""
