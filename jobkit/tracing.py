"""OpenTelemetry tracing: one trace from the code that enqueues a job into each run of it.

Needs ``opentelemetry-api`` (``pip install 'jobkit[tracing]'``) and, to export anything, an
OpenTelemetry SDK configured by the application. Register it on the `App`::

    app = App("shop", middleware=[Tracing()])

At enqueue, a ``enqueue JOB`` span (kind PRODUCER, a child of whatever span is current) is
started and its context injected into the envelope's headers (W3C ``traceparent`` /
``tracestate`` with the default propagator); the headers travel with the job on every backend.
In the process that runs the job, the context is extracted and each attempt runs inside a
``run JOB`` span (kind CONSUMER, a child of the enqueue span), current while the job function
runs, so spans the job starts are its children. Attributes:

=========================  ===============================================================
attribute                  value
=========================  ===============================================================
``messaging.system``       ``jobkit``
``messaging.destination``  the queue
``jobkit.job.id``          the job id
``jobkit.job.name``        the job name
``jobkit.attempt``         the attempt number, 1-based (run spans)
``jobkit.outcome``         succeeded, retrying, dead or interrupted (run spans)
``jobkit.retry_delay_s``   the delay before the next attempt (retrying)
``jobkit.dead_reason``     the dead-letter reason (dead)
``jobkit.time_limit``      true when the time limit stopped the attempt
=========================  ===============================================================

A failed attempt's span has status ERROR and the error as its description. When a job process
is killed (hard time limit, crash) the worker's main process records the run span instead,
ending now and lasting the attempt's run time, with the same parent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import SpanKind, Status, StatusCode

from jobkit._version import __version__
from jobkit.envelope import Envelope
from jobkit.middleware import Middleware, RunResult, RunStatus
from jobkit.worker.context import JobContext


class Tracing(Middleware):
    """Spans for enqueue and for each run (see the module docstring). Thread-safe.

    `tracer_provider`: where spans go (the global one unless given); `propagator`: how the
    context is written into headers (the global one, W3C trace context by default)."""

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self._tracer = trace.get_tracer("jobkit", __version__, tracer_provider=tracer_provider)
        self._propagator = propagator
        self._lock = threading.Lock()
        self._enqueues: dict[str, trace.Span] = {}
        self._runs: dict[tuple[str, int], tuple[trace.Span, object]] = {}

    def _prop(self) -> TextMapPropagator:
        return self._propagator or propagate.get_global_textmap()

    @staticmethod
    def _attributes(envelope: Envelope) -> dict[str, Any]:
        return {
            "messaging.system": "jobkit",
            "messaging.destination": envelope.queue,
            "jobkit.job.id": envelope.id,
            "jobkit.job.name": envelope.job,
        }

    def before_enqueue(self, envelope: Envelope) -> Mapping[str, str] | None:
        span = self._tracer.start_span(
            f"enqueue {envelope.job}", kind=SpanKind.PRODUCER, attributes=self._attributes(envelope)
        )
        carrier: dict[str, str] = {}
        self._prop().inject(carrier, context=trace.set_span_in_context(span))
        with self._lock:
            self._enqueues[envelope.id] = span
        return carrier

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        with self._lock:
            span = self._enqueues.pop(envelope.id, None)
        if span is None:
            return
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        span = self._start_run(job, envelope, start_time=None)
        token = otel_context.attach(trace.set_span_in_context(span))
        with self._lock:
            self._runs[(job.id, job.attempt)] = (span, token)

    def _start_run(self, job: JobContext, envelope: Envelope, start_time: int | None) -> Any:
        parent = self._prop().extract(envelope.headers)
        return self._tracer.start_span(
            f"run {envelope.job}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={**self._attributes(envelope), "jobkit.attempt": job.attempt},
            start_time=start_time,
        )

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        with self._lock:
            found = self._runs.pop((job.id, job.attempt), None)
        if found is None:  # the job process was killed: record the attempt from here
            ran_ns = int(result.duration.total_seconds() * 1e9)
            span, token = self._start_run(job, envelope, time.time_ns() - ran_ns), None
        else:
            span, token = found
        span.set_attribute("jobkit.outcome", str(result.status))
        if result.time_limit:
            span.set_attribute("jobkit.time_limit", True)
        if result.delay is not None:
            span.set_attribute("jobkit.retry_delay_s", result.delay.total_seconds())
        if result.reason is not None:
            span.set_attribute("jobkit.dead_reason", result.reason)
        if result.status in (RunStatus.RETRYING, RunStatus.DEAD):
            span.set_status(Status(StatusCode.ERROR, result.error))
        span.end()
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
