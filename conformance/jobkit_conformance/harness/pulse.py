"""A pulse: undelayed no-op jobs sent at a steady rate while a scenario measures lateness.

How long the worker takes to start an undelayed job at a given moment is how slow the machine
is then (other scenarios, other test runs); the lateness bounds add it, so a loaded machine
does not fail a correct backend, while a backend that delays due jobs, and not others, still
fails (`jobkit_conformance.checkers.bounds`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jobkit_conformance import jobs
from jobkit_conformance.history import JobSpec

from .context import Context

INTERVAL = 0.25
"""Seconds between two pulse jobs."""


@contextmanager
def pulse(ctx: Context, interval: float = INTERVAL) -> Iterator[None]:
    """Send a job of kind "pulse" every `interval` s on the scenario's queue until the block
    ends. Thread: one, stopped and joined on exit."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            ctx.enqueue(jobs.pulse, [], JobSpec(kind="pulse"))
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"pulse-{ctx.scenario}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
