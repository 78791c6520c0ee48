"""The record every backend benchmark returns, so ``bench/run.py`` can print one table.

Convention: each ``bench/<backend>_bench.py`` defines

    def measure(*, quick: bool) -> list[Measurement]

which starts the servers it needs (loopback, free ports) and stops them, runs the same no-op job
through jobkit and through the native system on the same broker with the same processes,
alternating which goes first, and returns one ``Measurement`` per (backend, system) pair.
``quick`` means a smoke run: small counts, well under a minute, numbers not meaningful.
A figure the script cannot measure is ``None`` (shown as "-"), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Measurement:
    """One system's figures on one backend, from one run."""

    backend: str
    """jobkit's URL scheme for the broker, e.g. ``"celery+redis"``, ``"sqs"``, ``"rabbitmq"``."""
    system: str
    """``"jobkit"``, or the native system's name: ``"celery"``, ``"boto3"``, ``"pika"``, ..."""
    jobs: int
    """How many jobs each figure is measured over."""
    enqueue_per_s: float | None
    """Jobs enqueued per second, one call per job."""
    enqueue_many_per_s: float | None
    """Jobs enqueued per second with the batch call (``enqueue_many`` or the native batch)."""
    drain_per_s: float | None
    """Jobs run per second by the worker(s), from first start to last finish."""
    latency_p50_ms: float | None
    """Median enqueue-to-start latency in milliseconds, on a lightly loaded queue."""
    latency_p99_ms: float | None
    """99th percentile enqueue-to-start latency in milliseconds."""
    notes: str = ""
    """Settings that differ from the defaults (processes, prefetch, store), shown under it."""
