"""Prometheus metrics: a middleware that counts jobs, and the queue depths of the backend.

Needs ``prometheus-client`` (``pip install 'jobkit[metrics]'``). ``jobkit worker --metrics-port
N`` turns both on and serves them at ``http://127.0.0.1:N/metrics`` (``--metrics-address`` for
another interface) from the worker's main process. Jobs run in other processes (jobkit's job
processes, Celery's pool children), so the worker uses prometheus-client's multiprocess mode:
every process writes its samples to files in a private directory (``PROMETHEUS_MULTIPROC_DIR``,
made at start and removed at exit) and the main process adds them up on each scrape. A job
process killed mid-job loses no count (samples are written as they happen), and what it held in
flight is taken back by the main process, which reports that attempt's outcome.

In a producer (a web app), register ``PrometheusMetrics()`` on the `App` to count what it
enqueues, and serve prometheus-client's default registry as usual.

Metrics (labels ``job`` and ``queue`` unless said otherwise):

==================================  =========  ==============================================
name                                type       what
==================================  =========  ==============================================
``jobkit_jobs_enqueued_total``      counter    jobs sent by this process
``jobkit_jobs_started_total``       counter    attempts started
``jobkit_jobs_succeeded_total``     counter    attempts that succeeded
``jobkit_jobs_retried_total``       counter    attempts that failed and will run again
``jobkit_jobs_dead_total``          counter    attempts after which the job was dead-lettered
``jobkit_jobs_interrupted_total``   counter    attempts stopped by a worker shutdown (released)
``jobkit_jobs_time_limited_total``  counter    attempts stopped by their time limit
``jobkit_job_run_seconds``          histogram  run time of each attempt
``jobkit_job_wait_seconds``         histogram  from when a job was due (enqueued, or its delay
                                               ended) to the start of its attempt
``jobkit_jobs_in_flight``           gauge      attempts running now in this worker
``jobkit_queue_ready``              gauge      ``queue`` only: ready messages (backend status)
``jobkit_queue_in_flight``          gauge      ``queue`` only: leased by any worker
``jobkit_queue_delayed``            gauge      ``queue`` only: waiting for their time
``jobkit_queue_dead``               gauge      ``queue`` only: in the dead-letter queue
==================================  =========  ==============================================

The ``jobkit_queue_*`` gauges are read from `Backend.stats` on each scrape (the numbers of
``jobkit status``), so they cover every worker of the backend, not just this one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from jobkit.envelope import Envelope
from jobkit.middleware import Middleware, RunResult, RunStatus
from jobkit.records import QueueStats
from jobkit.worker.context import JobContext

LABELS = ("job", "queue")
_RUN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_COUNTED = {
    RunStatus.SUCCEEDED: "succeeded",
    RunStatus.RETRYING: "retried",
    RunStatus.DEAD: "dead",
    RunStatus.INTERRUPTED: "interrupted",
}


class PrometheusMetrics(Middleware):
    """Counts enqueues and attempts (see the module docstring for the names).

    `registry`: where the metrics are registered (prometheus-client's default one unless
    given; in multiprocess mode the samples go to the files whatever the registry). Create one
    per registry and process. Thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        def counter(name: str, doc: str) -> Counter:
            return Counter(f"jobkit_jobs_{name}", doc, LABELS, registry=registry)

        self.enqueued = counter("enqueued", "Jobs sent by this process")
        self.started = counter("started", "Attempts started")
        self.ended = {
            label: counter(label, f"Attempts {label}") for label in sorted(_COUNTED.values())
        }
        self.time_limited = counter("time_limited", "Attempts stopped by their time limit")
        self.run_seconds = Histogram(
            "jobkit_job_run_seconds",
            "Run time of each attempt",
            LABELS,
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self.wait_seconds = Histogram(
            "jobkit_job_wait_seconds",
            "From when a job was due to the start of its attempt",
            LABELS,
            buckets=_RUN_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "jobkit_jobs_in_flight",
            "Attempts running now in this worker",
            LABELS,
            registry=registry,
            multiprocess_mode="sum",  # a killed process's +1 is taken back by the supervisor
        )

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        if error is None:
            self.enqueued.labels(envelope.job, envelope.queue).inc()

    def before_run(self, job: JobContext, envelope: Envelope) -> None:
        labels = (envelope.job, envelope.queue)
        self.started.labels(*labels).inc()
        self.in_flight.labels(*labels).inc()
        due = max(envelope.enqueued_at, envelope.not_before or envelope.enqueued_at)
        waited = (datetime.now(UTC) - due).total_seconds()
        self.wait_seconds.labels(*labels).observe(max(waited, 0.0))

    def after_run(self, job: JobContext, envelope: Envelope, result: RunResult) -> None:
        labels = (envelope.job, envelope.queue)
        self.in_flight.labels(*labels).dec()
        self.ended[_COUNTED[result.status]].labels(*labels).inc()
        if result.time_limit:
            self.time_limited.labels(*labels).inc()
        self.run_seconds.labels(*labels).observe(result.duration.total_seconds())


_QUEUE_GAUGES = (
    ("ready", "Ready messages"),
    ("in_flight", "Messages leased by a worker"),
    ("delayed", "Messages waiting for their time"),
    ("dead", "Messages in the dead-letter queue"),
)


class QueueCollector(Collector):
    """The ``jobkit_queue_*`` gauges, read from `stats` (a backend's `stats` for the served
    queues) on each collect. Calls are serialised, so `stats` need not be thread-safe; a
    failing `stats` call yields no queue gauges for that scrape (and the error is raised to
    prometheus-client, which logs it)."""

    def __init__(self, stats: Callable[[], Sequence[QueueStats]]) -> None:
        self._stats = stats
        self._lock = threading.Lock()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        with self._lock:
            stats = list(self._stats())
        for field, doc in _QUEUE_GAUGES:
            family = GaugeMetricFamily(f"jobkit_queue_{field}", doc, labels=["queue"])
            for s in stats:
                family.add_metric([s.queue], getattr(s, field))
            yield family


def multiprocess_registry(directory: str, collectors: Iterable[Collector] = ()) -> Any:
    """A registry that adds up the samples every process wrote to `directory`, plus
    `collectors`."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry


def samples(text: str) -> Mapping[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse a Prometheus text exposition: {(name, labels): value}. For tests and scripts."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found
