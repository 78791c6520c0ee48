"""A worker's sign of life on Redis, as Dramatiq keeps it: its id in ``NS:__heartbeats__``
scored by the time in ms. Other workers requeue the unacked messages of a worker whose
heartbeat is older than the configured timeout."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import redis

logger = logging.getLogger("jobkit.dramatiq")


class Heartbeat:
    """Beats for `worker` every `every` from a daemon thread of its own, started by `start`
    (idempotent) and stopped by `stop` (blocks up to one beat). Thread-safe.

    Beats do not depend on the worker's own calls: a worker whose threads are all busy with
    long jobs keeps its messages, and one that dies loses them after the timeout, whatever
    it was doing."""

    def __init__(self, client: redis.Redis, key: str, worker: str, every: timedelta) -> None:
        self._client = client
        self._key = key
        self.worker = worker
        self._every = max(every.total_seconds(), 0.05)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name=f"jobkit-dramatiq-heartbeat-{self.worker}", daemon=True
                )
                self._thread.start()

    def beat(self) -> None:
        """One beat now. Raises redis errors."""
        self._client.zadd(self._key, {self.worker: int(time.time() * 1000)})

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.beat()
            except redis.RedisError as exc:  # the broker is away: the next beat tries again
                logger.warning("heartbeat for %s failed: %s", self.worker, exc)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=self._every + 1)
