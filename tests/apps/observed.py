"""A test app with middleware: two recorders (to see the order), one that raises in every hook,
and OpenTelemetry tracing.

Hooks are written as JSON lines to $JOBKIT_TEST_HOOKS (when set, read at each hook). Spans go
to `memory` (the SDK's in-memory exporter, for the producer in the test process) and, when
$JOBKIT_TEST_SPANS is set, as JSON lines to that file (the SDK's console exporter, for the
worker's processes, whose memory the test cannot see).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import IO, Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from jobkit import App, Reject, RetryPolicy
from jobkit.envelope import Envelope
from jobkit.middleware import Middleware, RunResult, WorkerInfo
from jobkit.tracing import Tracing
from jobkit.worker.context import JobContext

user_log = logging.getLogger("tests.user")


def _write(entry: dict[str, Any]) -> None:
    path = os.environ.get("JOBKIT_TEST_HOOKS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**entry, "pid": os.getpid()}) + "\n")


class Recorder(Middleware):
    def __init__(self, name: str) -> None:
        self.name = name

    def before_enqueue(self, envelope: Envelope) -> Mapping[str, str] | None:
        _write({"m": self.name, "hook": "before_enqueue", "id": envelope.id})
        return {f"x-{self.name}": "1"}

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        _write({"m": self.name, "hook": "after_enqueue", "id": envelope.id, "error": bool(error)})

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        _write(
            {
                "m": self.name,
                "hook": "before_run",
                "id": job.id,
                "attempt": job.attempt,
                "headers": envelope.headers,
            }
        )

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        _write(
            {
                "m": self.name,
                "hook": "after_run",
                "id": job.id,
                "attempt": job.attempt,
                "status": str(result.status),
                "delay": result.delay.total_seconds() if result.delay is not None else None,
                "reason": result.reason,
                "time_limit": result.time_limit,
            }
        )

    def worker_started(self, worker: WorkerInfo) -> None:
        _write({"m": self.name, "hook": "worker_started", "queues": list(worker.queues)})

    def worker_stopped(self, worker: WorkerInfo) -> None:
        _write({"m": self.name, "hook": "worker_stopped"})


class Broken(Middleware):
    """Raises in every hook: jobs must still run and be recorded."""

    def before_enqueue(self, envelope: Envelope) -> Mapping[str, str] | None:
        raise RuntimeError("broken before_enqueue")

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        raise RuntimeError("broken after_enqueue")

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        raise RuntimeError("broken before_run")

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        raise RuntimeError("broken after_run")

    def worker_started(self, worker: WorkerInfo) -> None:
        raise RuntimeError("broken worker_started")


class _FileExporter(SpanExporter):
    """The SDK's console exporter, one JSON line per span, into $JOBKIT_TEST_SPANS if set."""

    def export(self, spans: Any) -> SpanExportResult:
        path = os.environ.get("JOBKIT_TEST_SPANS")
        if not path:
            return SpanExportResult.SUCCESS
        with open(path, "a") as out:
            return ConsoleSpanExporter(out=out, formatter=_one_line).export(spans)


def _one_line(span: ReadableSpan) -> str:
    return json.dumps(json.loads(span.to_json())) + "\n"


memory = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(memory))
provider.add_span_processor(SimpleSpanProcessor(_FileExporter()))
tracer = provider.get_tracer("tests.producer")

app = App("observed", middleware=[Recorder("a"), Broken(), Tracing(tracer_provider=provider)])
app.add_middleware(Recorder("b"))

QUICK = RetryPolicy(max_attempts=2, backoff_base=timedelta(seconds=0.1), jitter=0.0)


@app.job(queue="obs", retry=QUICK)
def ok(x: int) -> int:
    user_log.warning("user line for %s", x)
    return x


@app.job(queue="obs", retry=QUICK)
def flaky(x: int) -> int:
    """Fails on its first attempt, succeeds on the second."""
    from jobkit import current_job

    job = current_job()
    if job is not None and job.attempt == 1:
        raise ValueError("first attempt fails")
    return x


@app.job(queue="obs", retry=QUICK)
def hopeless(x: int) -> int:
    raise Reject(f"never works: {x}")


@app.job(queue="obs", retry=RetryPolicy(max_attempts=1), time_limit=timedelta(seconds=1))
def sleepy(seconds: float) -> None:
    time.sleep(seconds)


def read_lines(path: str) -> list[IO[str] | Any]:
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []
