"""The worker's parent process: the loop that dispatches, decides and acknowledges.

Threads: the main thread runs `Worker.run` (dispatch, outcomes, acks, time limits, lease
extension, signals); a `Receiver` thread leases messages into a bounded `Buffer`. Each thread
uses its own transport instance (`Transport.clone`). Job code never runs here: it runs in job
processes (`_pool.JobProcess`), so a hard time limit can stop it and a crash cannot take the
supervisor down.

Shutdown: the first SIGTERM or SIGINT (or `stop()`) stops receiving, releases what was leased but
not started, and lets running jobs finish for up to `grace`; then (or at a second signal, or
`stop(immediate=True)`) running jobs are killed and their messages released. Nothing that was not
acknowledged is lost: at worst it runs again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING

from jobkit.errors import ConfigurationError, JobkitError
from jobkit.policy import DEFAULT_POLICY, RetryPolicy
from jobkit.records import Delivery
from jobkit.store import EventKind, JobEvent
from jobkit.transport import Transport
from jobkit.worker._buffer import Buffer
from jobkit.worker._outcome import Action, Outcome, decide
from jobkit.worker._pool import JobProcess, Running
from jobkit.worker._receiver import Receiver

if TYPE_CHECKING:
    from jobkit.backend import WorkerOptions
    from jobkit.job import JobSet
    from jobkit.worker._served import ServedBackend

log = logging.getLogger("jobkit.worker")

_MAX_START_FAILURES = 3
# Outcomes and acks are written in batches: at most this long after a job ends, or this many.
# A crash loses at most that batch's acks, whose jobs then run again (at-least-once).
_FLUSH_EVERY = 0.02
_FLUSH_AT = 200


class Worker:
    """One worker: a supervisor plus `options.concurrency` job processes. Not reentrant."""

    def __init__(
        self,
        app: JobSet,
        backend: ServedBackend,
        options: WorkerOptions,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if options.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
        self.app = app
        self.backend = backend
        self.options = options
        self.rng = rng or random.Random()
        self.lease = options.lease
        self.finished = 0
        self._stop = threading.Event()
        self._immediate = threading.Event()
        self._buffer = Buffer(
            max(1, options.concurrency * (options.prefetch + 1)), processes=options.concurrency
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._wake = Connection(self._wake_r, writable=False)
        self._procs: list[JobProcess] = []
        self._events: list[JobEvent] = []
        self._acks: list[Delivery] = []
        self._start_failures = 0
        self._last_flush = 0.0

    # -- control ----------------------------------------------------------------------------

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop (graceful unless `immediate`). Thread- and signal-safe."""
        if immediate:
            self._immediate.set()
        self._stop.set()
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            log.warning("second signal %d: stopping now, releasing running jobs", signum)
            self.stop(immediate=True)
        else:
            log.warning(
                "signal %d: finishing running jobs (up to %s), then stopping",
                signum,
                self.options.grace,
            )
            self.stop()

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Serve until stopped. Blocks. Installs SIGTERM/SIGINT handlers on the main thread."""
        previous = self._install_signals()
        transport = self.backend.transport.clone()
        receiver = Receiver(
            self.backend,
            self.options,
            self._buffer,
            self._stop,
            wake=self._poke,
            on_crash=lambda: self.stop(immediate=True),
        )
        try:
            self._procs = [JobProcess(app_path=self.options.app_path) for _ in range(self._n())]
            for proc in self._procs:
                proc.start()
            receiver.start()
            grace_deadline: float | None = None
            while True:
                now = time.monotonic()
                if self._stop.is_set() and grace_deadline is None:
                    grace_deadline = now + self.options.grace.total_seconds()
                if self._immediate.is_set() or (
                    grace_deadline is not None and now >= grace_deadline
                ):
                    break
                if self._stop.is_set():
                    self._release_buffered(transport)
                    if not self._running_count():
                        break
                else:
                    self._dispatch(now)
                    if self._burst_done(receiver):
                        break
                self._wait_and_read(transport, self._timeout(now, grace_deadline))
                now = time.monotonic()
                self._enforce_time_limits(transport, now)
                self._extend_leases(transport, now)
                if now - self._last_flush >= _FLUSH_EVERY or len(self._acks) >= _FLUSH_AT:
                    self._flush(transport)
        finally:
            self._stop.set()
            self._buffer.wake_all()
            if receiver.is_alive():
                receiver.join(timeout=self.options.poll.total_seconds() + 30)
            self._flush(transport)
            self._kill_running(transport)
            self._release_buffered(transport)
            for proc in self._procs:
                proc.close(timeout=1.0)
            transport.close()
            self._restore_signals(previous)
            os.close(self._wake_w)
            self._wake.close()

    def _n(self) -> int:
        return self.options.concurrency

    def _timeout(self, now: float, grace_deadline: float | None) -> float:
        timeout = min(0.5, self.lease.total_seconds() / 6)
        for proc in self._procs:
            if proc.jobs and proc.jobs[0].deadline is not None:
                timeout = min(timeout, proc.jobs[0].deadline - now)
        if grace_deadline is not None:
            timeout = min(timeout, grace_deadline - now)
        return max(timeout, 0.0)

    def _running_count(self) -> int:
        return sum(len(p.jobs) for p in self._procs)

    def _burst_done(self, receiver: Receiver) -> bool:
        if not self.options.burst or not receiver.queues_empty.is_set():
            return False
        return not len(self._buffer) and not self._running_count()

    # -- dispatching and outcomes -----------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        """Hand buffered jobs to idle processes first; then, with `prefetch` > 1 and for jobs
        without a time limit, queue up to `prefetch - 1` more in each process so that it never
        waits for the supervisor (at the cost of fairness: they wait behind the running job)."""
        at = self.backend.clock.now()
        for depth in range(max(1, self.options.prefetch)):
            for proc in self._procs:
                if not proc.ready or len(proc.jobs) != depth:
                    continue
                if depth and proc.jobs[-1].envelope.time_limit is not None:
                    continue
                job, duplicates = self._buffer.take(allow_time_limit=depth == 0)
                for dup in duplicates:
                    self._acks.append(dup.delivery)
                    self._events.append(self._event(dup, EventKind.SKIPPED, None, at))
                if job is None:
                    return
                proc.submit(job, now)
                self._events.append(self._event(job, EventKind.STARTED, None, at))

    def _event(
        self, job: Running, kind: EventKind, error: str | None, at: datetime | None = None
    ) -> JobEvent:
        env = job.envelope
        return JobEvent(
            job_id=env.id,
            job=env.job,
            kind=kind,
            attempt=job.attempt,
            at=at or self.backend.clock.now(),
            error=error,
            key=env.idempotency_key,
        )

    def _wait_and_read(self, transport: Transport, timeout: float) -> None:
        by_conn = {p.outbox: p for p in self._procs if p.outbox is not None}
        ready = wait([*by_conn, self._wake], timeout)
        for conn in ready:
            if conn is self._wake:
                os.read(self._wake_r, 4096)
                continue
            proc = by_conn[conn]  # type: ignore[index]
            self._read_from(transport, proc)

    def _read_from(self, transport: Transport, proc: JobProcess) -> None:
        assert proc.outbox is not None
        try:
            while proc.outbox.poll():
                now = time.monotonic()
                outcome = proc.read(now)
                if outcome is None:
                    self._start_failures = 0
                    continue
                self._settle(transport, proc.finish_head(now), outcome)
        except (EOFError, OSError):
            self._on_process_died(transport, proc)

    def _on_process_died(self, transport: Transport, proc: JobProcess) -> None:
        was_ready = proc.ready
        code = proc.proc.poll() if proc.proc else None
        held = proc.kill()
        if not was_ready:
            self._start_failures += 1
            log.error("job process %d exited at start-up (exit code %s)", proc.pid, code)
            if self._start_failures >= _MAX_START_FAILURES:
                self._buffer.requeue(held)
                raise ConfigurationError(
                    f"job processes for app {self.options.app_path!r} exit at start-up "
                    f"(exit code {code}); run `python -c 'import ...'` on the app to see why"
                )
        else:
            log.error("job process %d died (exit code %s)", proc.pid, code)
        if held:
            self._settle(
                transport,
                held[0],
                Outcome(ok=False, error=f"WorkerLost: job process died (exit code {code})"),
            )
            self._buffer.requeue(held[1:])
        if not self._stop.is_set():
            proc.start()

    def _policy(self, job: str) -> RetryPolicy:
        jd = self.app.jobs.get(job)
        return jd.retry if jd is not None else DEFAULT_POLICY

    def _settle(self, transport: Transport, running: Running, outcome: Outcome) -> None:
        env = running.envelope
        decision = decide(env, running.attempt, outcome, self._policy(env.job), self.rng)
        if decision.action is Action.ACK:
            event = self._event(running, EventKind.SUCCEEDED, None)
            self._events.append(replace(event, result=outcome.result))
            self._acks.append(running.delivery)
        elif decision.action is Action.RELEASE:
            self._events.append(self._event(running, EventKind.FAILED, outcome.error))
            self._flush_events()
            transport.release(running.delivery, delay=decision.delay)
        else:
            self._events.append(self._event(running, EventKind.DEAD, decision.reason))
            self._flush_events()
            transport.dead_letter(running.delivery, reason=decision.reason)
        self._buffer.ended(running, succeeded=decision.action is Action.ACK)
        self.finished += 1
        if self.options.max_jobs is not None and self.finished >= self.options.max_jobs:
            self._stop.set()

    def _flush_events(self) -> None:
        if self._events:
            self.backend.store.record(self._events)
            self._events = []

    def _flush(self, transport: Transport) -> None:
        """Record outcomes, then ack: a crash in between re-runs nothing (the key is done)."""
        self._last_flush = time.monotonic()
        self._flush_events()
        if self._acks:
            transport.ack(self._acks)
            self._acks = []

    # -- time limits, leases, shutdown ------------------------------------------------------

    def _enforce_time_limits(self, transport: Transport, now: float) -> None:
        for proc in self._procs:
            if not proc.jobs:
                continue
            head = proc.jobs[0]
            if head.deadline is None or now < head.deadline:
                continue
            limit = head.envelope.time_limit
            log.warning(
                "job %s ran past its time limit of %s s: stopping it", head.envelope.id, limit
            )
            held = proc.kill()
            self._settle(
                transport,
                held[0],
                Outcome(ok=False, error=f"TimeLimitExceeded: ran past its time limit of {limit} s"),
            )
            self._buffer.requeue(held[1:])
            if not self._stop.is_set():
                proc.start()

    def _extend_leases(self, transport: Transport, now: float) -> None:
        if not self.backend.capabilities.lease_extension:
            return
        lease = self.lease.total_seconds()
        held = [*self._buffer.snapshot(), *(job for p in self._procs for job in p.jobs)]
        for job in held:
            if job.lease_until - now < lease * 2 / 3:
                try:
                    transport.extend(job.delivery, lease=self.lease)
                except JobkitError as exc:
                    log.error("could not extend the lease of %s: %s", job.delivery.id, exc)
                    continue
                job.lease_until = now + lease

    def _release_buffered(self, transport: Transport) -> None:
        for job in self._buffer.drain():
            transport.release(job.delivery, delay=timedelta(0))

    def _kill_running(self, transport: Transport) -> None:
        for proc in self._procs:
            for job in proc.kill() if proc.jobs else []:
                log.warning("released running job %s at shutdown", job.envelope.id)
                transport.release(job.delivery, delay=timedelta(0))
                self._buffer.ended(job, succeeded=False)

    def _install_signals(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, object] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, self._on_signal)
        return previous

    def _restore_signals(self, previous: dict[int, object]) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
