"""The worker's parent process: the loop that leases, dispatches, decides and acknowledges.

Threads: the main thread runs `Worker.run` (dispatch, outcomes, acks, time limits, lease
extension, signals); one receiver thread leases messages into a bounded buffer. Each thread uses
its own transport instance (`Transport.clone`). Job code never runs here: it runs in job
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
from collections import deque
from collections.abc import Iterable
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING

from jobkit.envelope import decode
from jobkit.errors import ConfigurationError, JobkitError, SerializationError
from jobkit.policy import DEFAULT_POLICY, RetryPolicy
from jobkit.records import Delivery
from jobkit.store import EventKind, JobEvent, dedup_key
from jobkit.transport import Transport
from jobkit.worker._outcome import Action, Outcome, decide
from jobkit.worker._pool import JobProcess, Running

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.backend import WorkerOptions
    from jobkit.transport_backend import TransportBackend

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
        app: App,
        backend: TransportBackend,
        options: WorkerOptions,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.app = app
        self.backend = backend
        self.options = options
        self.rng = rng or random.Random()
        self.lease = options.lease
        self.capacity = max(1, options.concurrency * (options.prefetch + 1))
        self.finished = 0
        self._stop = threading.Event()
        self._immediate = threading.Event()
        self._buffer: deque[Running] = deque()
        self._held = 0  # buffered + running; guarded by _space
        self._space = threading.Condition()
        self._queues_empty = threading.Event()
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
        receiver = threading.Thread(target=self._receive_loop, name="jobkit-receiver", daemon=True)
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
                    self._kill_running(transport)
                    break
                if self._stop.is_set():
                    self._release_buffered(transport)
                    if not self._running_count():
                        break
                else:
                    self._dispatch(now)
                    if self._burst_done():
                        break
                self._wait_and_read(transport, self._timeout(now, grace_deadline))
                now = time.monotonic()
                self._enforce_time_limits(transport, now)
                self._extend_leases(transport, now)
                if now - self._last_flush >= _FLUSH_EVERY or len(self._acks) >= _FLUSH_AT:
                    self._flush(transport)
        finally:
            self._stop.set()
            with self._space:
                self._space.notify_all()
            if receiver.is_alive():
                receiver.join(timeout=self.options.poll.total_seconds() + 30)
            self._kill_running(transport)
            self._release_buffered(transport)
            self._flush(transport)
            for proc in self._procs:
                proc.close(timeout=1.0)
            transport.close()
            self._restore_signals(previous)
            os.close(self._wake_w)
            self._wake.close()

    def _n(self) -> int:
        if self.options.concurrency < 1:
            raise ConfigurationError("concurrency must be at least 1")
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

    def _burst_done(self) -> bool:
        if not self.options.burst or not self._queues_empty.is_set():
            return False
        with self._space:
            return not self._buffer and not self._running_count()

    # -- receiving (receiver thread) --------------------------------------------------------

    def _receive_loop(self) -> None:
        transport = self.backend.transport.clone()
        try:
            while not self._stop.is_set():
                with self._space:
                    room = self.capacity - self._held
                    if room <= 0:
                        self._space.wait(0.2)
                        continue
                try:
                    deliveries = transport.receive(
                        self.options.queues,
                        max_messages=min(room, 100),
                        wait=self.options.poll,
                        lease=self.lease,
                    )
                except JobkitError as exc:
                    log.error("receive failed, retrying in 1 s: %s", exc)
                    self._stop.wait(1.0)
                    continue
                if not deliveries:
                    self._queues_empty.set()
                    self._poke()
                    continue
                self._queues_empty.clear()
                runnable = self._screen(transport, deliveries)
                if runnable:
                    with self._space:
                        self._buffer.extend(runnable)
                        self._held += len(runnable)
                    self._poke()
        except Exception:  # pragma: no cover - a bug: stop the worker rather than hang
            log.exception("receiver thread crashed; stopping the worker")
            self.stop(immediate=True)
        finally:
            transport.close()

    def _screen(self, transport: Transport, deliveries: list[Delivery]) -> list[Running]:
        """Dead-letter undecodable and crash-looping messages, ack completed duplicates."""
        now = self.backend.clock.now()
        expires = time.monotonic() + self.lease.total_seconds()
        candidates: list[Running] = []
        events: list[JobEvent] = []
        for delivery in deliveries:
            try:
                envelope = decode(delivery.body)
            except SerializationError as exc:
                log.error("message %s on %s does not decode: %s", delivery.id, delivery.queue, exc)
                transport.dead_letter(delivery, reason=f"undecodable: {exc}")
                continue
            attempt = envelope.attempt + delivery.deliveries
            if attempt > envelope.max_attempts:
                reason = (
                    f"delivered {attempt} times, over max attempts {envelope.max_attempts}: "
                    "earlier attempts ended without an outcome (process killed or lease lost)"
                )
                transport.dead_letter(delivery, reason=reason)
                events.append(
                    self._event(envelope.id, envelope.job, EventKind.DEAD, attempt, reason)
                )
                continue
            candidates.append(
                Running(delivery=delivery, envelope=envelope, attempt=attempt, lease_until=expires)
            )
        keys = [dedup_key(r.envelope.id, r.envelope.idempotency_key) for r in candidates]
        done = self.backend.store.done(keys) if keys else set()
        runnable: list[Running] = []
        duplicates: list[Delivery] = []
        for key, running in zip(keys, candidates, strict=True):
            if key in done:
                duplicates.append(running.delivery)
                env = running.envelope
                events.append(
                    JobEvent(
                        job_id=env.id,
                        job=env.job,
                        kind=EventKind.SKIPPED,
                        attempt=running.attempt,
                        at=now,
                        key=env.idempotency_key,
                    )
                )
            else:
                runnable.append(running)
        if events:
            self.backend.store.record(events)
        if duplicates:
            transport.ack(duplicates)
        return runnable

    # -- dispatching and outcomes (main thread) ---------------------------------------------

    def _dispatch(self, now: float) -> None:
        """Hand buffered jobs to idle processes first; then, with `prefetch` > 1 and for jobs
        without a time limit, queue up to `prefetch - 1` more in each process so that it never
        waits for the supervisor (at the cost of fairness: they wait behind the running job)."""
        if not self._buffer:
            return
        started: list[JobEvent] = []
        at = self.backend.clock.now()
        with self._space:
            for depth in range(max(1, self.options.prefetch)):
                for proc in self._procs:
                    if not self._buffer or not proc.ready or len(proc.jobs) != depth:
                        continue
                    if depth and (
                        self._buffer[0].envelope.time_limit is not None
                        or proc.jobs[-1].envelope.time_limit is not None
                    ):
                        continue
                    running = self._buffer.popleft()
                    proc.submit(running, now)
                    env = running.envelope
                    started.append(
                        JobEvent(
                            job_id=env.id,
                            job=env.job,
                            kind=EventKind.STARTED,
                            attempt=running.attempt,
                            at=at,
                            key=env.idempotency_key,
                        )
                    )
        self._events.extend(started)

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
                self._requeue(held)
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
            self._requeue(held[1:])
        if not self._stop.is_set():
            proc.start()

    def _requeue(self, jobs: Iterable[Running]) -> None:
        """Put leased-but-not-started jobs back at the front of the buffer."""
        with self._space:
            for job in reversed(list(jobs)):
                job.started = job.deadline = None
                self._buffer.appendleft(job)

    def _policy(self, job: str) -> RetryPolicy:
        jd = self.app.jobs.get(job)
        return jd.retry if jd is not None else DEFAULT_POLICY

    def _settle(self, transport: Transport, running: Running, outcome: Outcome) -> None:
        env = running.envelope
        decision = decide(env, running.attempt, outcome, self._policy(env.job), self.rng)
        if decision.action is Action.ACK:
            self._events.append(
                JobEvent(
                    job_id=env.id,
                    job=env.job,
                    kind=EventKind.SUCCEEDED,
                    attempt=running.attempt,
                    at=self.backend.clock.now(),
                    result=outcome.result,
                    key=env.idempotency_key,
                )
            )
            self._acks.append(running.delivery)
        elif decision.action is Action.RELEASE:
            self._events.append(
                self._event(env.id, env.job, EventKind.FAILED, running.attempt, outcome.error)
            )
            self._flush_events()
            transport.release(running.delivery, delay=decision.delay)
        else:
            self._events.append(
                self._event(env.id, env.job, EventKind.DEAD, running.attempt, decision.reason)
            )
            self._flush_events()
            transport.dead_letter(running.delivery, reason=decision.reason)
        with self._space:
            self._held -= 1
            self._space.notify()
        self.finished += 1
        if self.options.max_jobs is not None and self.finished >= self.options.max_jobs:
            self._stop.set()

    def _event(
        self, job_id: str, job: str, kind: EventKind, attempt: int, error: str | None
    ) -> JobEvent:
        return JobEvent(
            job_id=job_id,
            job=job,
            kind=kind,
            attempt=attempt,
            at=self.backend.clock.now(),
            error=error,
        )

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
            self._requeue(held[1:])
            if not self._stop.is_set():
                proc.start()

    def _extend_leases(self, transport: Transport, now: float) -> None:
        if not self.backend.capabilities.lease_extension:
            return
        lease = self.lease.total_seconds()
        with self._space:
            held = [*self._buffer, *(job for p in self._procs for job in p.jobs)]
        for job in held:
            if job.lease_until - now < lease * 2 / 3:
                try:
                    transport.extend(job.delivery, lease=self.lease)
                except JobkitError as exc:
                    log.error("could not extend the lease of %s: %s", job.delivery.id, exc)
                    continue
                job.lease_until = now + lease

    def _release_buffered(self, transport: Transport) -> None:
        with self._space:
            jobs = list(self._buffer)
            self._buffer.clear()
            self._held -= len(jobs)
        for job in jobs:
            transport.release(job.delivery, delay=timedelta(0))

    def _kill_running(self, transport: Transport) -> None:
        released: list[Running] = []
        for proc in self._procs:
            if proc.jobs:
                released.extend(proc.kill())
        with self._space:
            self._held -= len(released)
        for job in released:
            log.warning("released running job %s at shutdown", job.envelope.id)
            transport.release(job.delivery, delay=timedelta(0))

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
