"""Stopping a Celery worker the way jobkit's options say: the grace period after SIGTERM (then
the pool processes are SIGKILLed), `burst` (stop once the queues are empty) and `max_jobs`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from celery import signals as celery_signals

from jobkit.spi import QueueStats, WorkerOptions

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")


class Stopper:
    """Grace period, `burst` and `max_jobs` for a Celery worker."""

    def __init__(
        self,
        stats: Callable[[list[str]], list[QueueStats]],
        worker: Any,
        options: WorkerOptions,
    ) -> None:
        """`stats`: the backend's `stats` (to see empty queues for `burst`)."""
        self.stats = stats
        self.worker = worker
        self.options = options
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stopping = False
        self._warm_seen = False

    def install(self) -> None:
        celery_signals.worker_shutting_down.connect(self._on_shutdown, weak=False)
        celery_signals.worker_ready.connect(self._on_ready, weak=False)

    def uninstall(self) -> None:
        self._done.set()
        celery_signals.worker_shutting_down.disconnect(self._on_shutdown)
        celery_signals.worker_ready.disconnect(self._on_ready)

    def _on_ready(self, **_: Any) -> None:
        if self.options.burst or self.options.max_jobs is not None:
            threading.Thread(target=self._watch, name="jobkit-burst", daemon=True).start()

    def _watch(self) -> None:
        poll = max(self.options.poll.total_seconds(), 0.2)
        empty_for = 0
        while not self._done.wait(poll):
            if self.options.max_jobs is not None and _ended() >= self.options.max_jobs:
                self._stop()
                return
            if self.options.burst:
                stats = self.stats(list(self.options.queues))
                busy = sum(s.ready + s.in_flight + s.delayed for s in stats)
                active = _active_requests()
                empty_for = empty_for + 1 if busy == 0 and active == 0 else 0
                if empty_for >= 2:
                    self._stop()
                    return

    def _stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            os.kill(os.getpid(), signal.SIGTERM)

    def _on_shutdown(self, sig: str = "", how: str = "", exitcode: int = 0, **_: Any) -> None:
        if how != "Warm":
            return
        # A second SIGTERM: immediate (no grace).
        grace = 0.0 if self._warm_seen else self.options.grace.total_seconds()
        self._warm_seen = True

        def cold() -> None:
            try:
                if self._done.wait(grace):
                    return
                logger.warning(
                    "jobs still running after the %g s grace period: stopping them", grace
                )
                # Kill the pool processes: their jobs end unacked and are delivered again
                # (Celery requeues on a lost worker). Celery's own cold shutdown can wait 30 s
                # for a pool process that waits for the stopping parent to read its last result
                # (billiard's _ensure_messages_consumed); a SIGKILL cannot be ignored.
                while not self._done.wait(0) and _kill_children():
                    if self._done.wait(_COLD_WAIT):
                        return
            except Exception:  # a thread must not die silently
                logger.exception("stopping the worker after its grace period failed")

        threading.Thread(target=cold, name="jobkit-grace", daemon=True).start()


_COLD_WAIT = 3.0


def _kill_children() -> int:
    """SIGKILL this process's child processes (Linux: found through /proc); how many."""
    me = str(os.getpid())
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the ppid is the second field after the parenthesised command name
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == me:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _ended() -> int:
    from celery.worker import state

    return int(state.all_total_count[0]) - len(state.active_requests)


def _active_requests() -> int:
    from celery.worker import state

    return len(state.active_requests) + len(state.reserved_requests)
