"""The running job's heartbeat in a jobkit `SimpleWorker`, and the hard time limit.

RQ's `SimpleWorker` runs the job in its own thread and keeps no heartbeat meanwhile (the job's
StartedJobRegistry entry lives for the job's whole timeout, so a killed worker's job waits that
long). jobkit's keeps the entry on the short heartbeat TTL, as the forking worker's parent does,
and makes the time limit hard: the job runs in the worker's process, so a job past its limit by
`HARD_LIMIT_MARGIN` takes the process down (SIGKILL), as a hard limit does in Celery's pool; the
supervisor starts a new worker, and the job, left in the StartedJobRegistry, is found by the
maintenance and counted as an attempt.

One thread serves the worker process's life, started with its first job: a thread started and
joined for every job was a measurable part of a no-op job's 4 ms (`bench/rq_bench.py`).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rq.job import Job
from rq.utils import now
from rq.worker import BaseWorker

logger = logging.getLogger("jobkit.rq")

HARD_LIMIT_MARGIN = 1.0
"""Seconds after a job's time limit that its work-horse (or SimpleWorker process) is killed."""


def past_hard_limit(job: Job) -> bool:
    """The job has run `HARD_LIMIT_MARGIN` past its time limit: RQ's alarm (which raises in
    the job) did not stop it: the job caught the exception, or is stuck in a C call."""
    started = job.started_at
    if not job.timeout or job.timeout <= 0 or started is None:
        return False
    return bool((now() - started).total_seconds() > job.timeout + HARD_LIMIT_MARGIN)


class Heartbeat:
    """Beats for the job a worker runs, every `every` s. Thread-safe: `running` is called by
    the worker's thread; the beats run in a daemon thread of their own."""

    def __init__(self, worker: BaseWorker, every: float) -> None:
        self._worker = worker
        self._every = every
        self._lock = threading.Lock()
        self._current: tuple[Job, Any] | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @contextmanager
    def running(self, job: Job, execution: Any) -> Iterator[None]:
        """Keep `job`'s heartbeat (RQ `execution`) while the block runs. Blocks on exit while a
        beat is in flight: no beat for the job starts after the block."""
        with self._lock:
            self._current = (job, execution)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beats, name="jobkit-rq-heartbeat", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._current = None

    def stop(self) -> None:
        """End the beats thread (the worker is done: RQ's `work()` returned). Idempotent; waits
        up to a beat in flight."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self._every + 5)

    def _beats(self) -> None:
        while not self._stopped.wait(self._every):
            with self._lock:
                if self._current is not None:
                    self._beat(*self._current)

    def _beat(self, job: Job, execution: Any) -> None:
        if past_hard_limit(job):
            logger.error(
                "job %s[%s] ran past its time limit: stopping this worker process",
                job.func_name,
                job.id,
            )
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            self._worker.maintain_heartbeats(job, execution)
        except Exception:
            logger.exception("heartbeat of job %s failed", job.id)
