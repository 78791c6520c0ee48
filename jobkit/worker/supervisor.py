"""The worker's parent process: the loop that dispatches, decides and acknowledges.

Threads: the main thread runs `Worker.run` (dispatch, outcomes, acks, time limits, lease
extension, signals); a `Receiver` thread leases messages into a bounded `Buffer`. Each thread
uses its own transport instance (`Transport.clone`). Job code never runs here: it runs in job
processes (`_pool.JobProcess`), so a hard time limit can stop it and a crash cannot take the
supervisor down.

Shutdown: the first SIGTERM or SIGINT (or `stop()`) stops receiving, tells the job processes to
start nothing more (`_signals.Hold`, at once from a watcher thread: the main thread may be
inside a broker call), releases what was leased but not started without using
an attempt (`Transport.release_uncounted`), and lets running jobs finish for up to `grace`; then
(or at a second signal, or `stop(immediate=True)`) running jobs are killed and their messages
released. Nothing that was not
acknowledged is lost: at worst it runs again.

Outages: the main thread's broker and store calls go through a `_retrying.CallQueue` (in order,
retried with capped backoff, never blocking the loop); the receiver's through a `Retrier`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from jobkit.errors import BrokerUnavailable, ConfigurationError, JobkitError
from jobkit.logcontext import job_fields
from jobkit.middleware import RunResult, RunStatus, WorkerInfo, context_of
from jobkit.policy import DEFAULT_POLICY, RetryPolicy
from jobkit.store import EventKind
from jobkit.transport import Transport
from jobkit.worker._buffer import Buffer
from jobkit.worker._execute import run_result
from jobkit.worker._leases import Leases
from jobkit.worker._observe import worker_hooks
from jobkit.worker._outcome import Action, Outcome, decide
from jobkit.worker._pool import JobProcess, Running
from jobkit.worker._receiver import Receiver
from jobkit.worker._retrying import connect
from jobkit.worker._screen import Screen
from jobkit.worker._settling import Settling
from jobkit.worker._signals import Hold, StopSignals

if TYPE_CHECKING:
    from jobkit.backend import WorkerOptions
    from jobkit.job import JobSet
    from jobkit.worker._served import ServedBackend

log = logging.getLogger(__name__)

_MAX_START_FAILURES = 3
# At exit, how long to keep trying to release leased jobs while the broker is away.
_EXIT_RETRY_S = 10.0


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
        if options.max_jobs_per_child is not None and options.max_jobs_per_child < 1:
            raise ConfigurationError(
                f"max_jobs_per_child is {options.max_jobs_per_child}: it must be at least 1 "
                "(or unset, to keep each job process for the worker's lifetime)"
            )
        self.app = app
        self.backend = backend
        self.options = options
        self.rng = rng or random.Random()
        self.lease = options.lease
        self.finished = 0
        self._stop = threading.Event()
        self._immediate = threading.Event()
        self._buffer = Buffer(
            max(1, options.concurrency * (options.prefetch + 1)),
            processes=options.concurrency,
            remember=backend.store.retention.keys,
        )
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._hold = Hold()
        self._signals = StopSignals(self._on_signal, self._hold, self._poke)
        self._procs: list[JobProcess] = []
        self._start_failures = 0
        # Every broker and store call of this thread: batched, retried through outages.
        self._settling = Settling(backend.store, backend.clock)
        self._leases = Leases(
            lease=options.lease,
            buffer=self._buffer,
            extendable=backend.capabilities.lease_extension,
        )
        self.hooks = worker_hooks(app)
        self._info = WorkerInfo(
            app=app.name, queues=tuple(options.queues), concurrency=options.concurrency
        )

    # -- control ----------------------------------------------------------------------------

    def stop(self, *, immediate: bool = False) -> None:
        """Ask the worker to stop (graceful unless `immediate`): job processes start nothing
        more from now on. Thread- and signal-safe."""
        self._hold.hold()
        if immediate:
            self._immediate.set()
        self._stop.set()
        self._poke()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    def _on_signal(self, signum: int) -> None:
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
        self._signals.install()
        transport = self.backend.transport.clone()
        receiver = Receiver(
            self.backend,
            self.options,
            self._buffer,
            self._stop,
            wake=self._poke,
            on_crash=lambda: self.stop(immediate=True),
            screener=Screen(
                store=self.backend.store,
                known=frozenset(self.app.jobs),
                timeout=self.options.unknown_job_timeout,
                now=self.backend.clock.now,
                unstarted=self._leases.unstarted,
            ),
            on_lapsed=self._leases.dropped,
        )
        self.hooks.worker_started(self._info)
        try:
            self._procs = [
                JobProcess(
                    app_path=self.options.app_path,
                    max_jobs=self.options.max_jobs_per_child,
                    hold_r=self._hold.r,
                )
                for _ in range(self._n())
            ]
            for proc in self._procs:
                proc.start()
            # Clients opened now, not on the first call of the loop: on a busy machine that
            # took longer than a short lease, and the leases received meanwhile lapsed.
            connect("connect to the broker", transport.connect)
            connect("connect to the job store", self.backend.store.connect)
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
                # Leases are looked at after each phase that can take broker or store round
                # trips (a second and more each on a loaded machine), not once per turn.
                self._extend_leases(transport)
                self._wait_and_read(transport, self._timeout(now, grace_deadline))
                now = time.monotonic()
                self._enforce_time_limits(transport, now)
                self._extend_leases(transport)
                if self._settling.due(idle_since=self._buffer.idle_since()):
                    self._settling.flush(transport)
                    self._extend_leases(transport)
        finally:
            self._stop.set()
            self._buffer.wake_all()
            if receiver.is_alive():
                receiver.join(timeout=self.options.poll.total_seconds() + 30)
            self._settling.flush(transport)
            self._kill_running(transport)
            self._release_buffered(transport)
            self._settling.drain(min(_EXIT_RETRY_S, self.lease.total_seconds()))
            for proc in self._procs:
                proc.close(timeout=1.0)
            transport.close()
            self._signals.restore()
            self._hold.close()
            os.close(self._wake_w)
            os.close(self._wake_r)
            self.hooks.worker_stopped(self._info)

    def _n(self) -> int:
        return self.options.concurrency

    def _timeout(self, now: float, grace_deadline: float | None) -> float:
        timeout = min(0.5, self.lease.total_seconds() / 6)
        for proc in self._procs:
            if proc.jobs and proc.jobs[0].deadline is not None:
                timeout = min(timeout, proc.jobs[0].deadline - now)
        if grace_deadline is not None:
            timeout = min(timeout, grace_deadline - now)
        pending = self._settling.wait_at_most(now, idle_since=self._buffer.idle_since())
        if pending is not None:
            timeout = min(timeout, pending)
        return max(timeout, 0.0)

    def _running_count(self) -> int:
        return sum(len(p.jobs) for p in self._procs)

    def _burst_done(self, receiver: Receiver) -> bool:
        if not self.options.burst or not receiver.queues_empty.is_set():
            return False
        return not len(self._buffer) and not self._running_count()

    # -- dispatching and outcomes -----------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        """Hand buffered jobs to idle processes first; then, with `prefetch` > 1, queue up to
        `prefetch - 1` more in each process so that it never waits for the supervisor (at the
        cost of fairness: they wait behind the running job). A queued job's time limit counts
        from when the job before it is seen finished; if that one runs past its own limit, the
        process is killed and the queued jobs, never started, go back to the buffer uncounted."""
        at = self.backend.clock.now()
        self._recheck_done()
        for depth in range(max(1, self.options.prefetch)):
            for proc in self._procs:
                if not proc.ready or len(proc.jobs) != depth:
                    continue
                taken_at = time.monotonic()  # after the store call
                job, duplicates, lapsed = self._buffer.take(taken_at)
                self._leases.dropped(lapsed, taken_at)
                for dup in duplicates:
                    self._settling.acks.append(dup.delivery)
                    self._settling.record(dup, EventKind.SKIPPED, at=at)
                if job is None:
                    return
                proc.submit(job, now)
                self._settling.record(job, EventKind.STARTED, at=at)

    def _recheck_done(self) -> None:
        """Ask the job store once which of the jobs about to be dispatched have succeeded
        meanwhile (another worker held a copy), so that they are acked, not run again. One store
        call per dispatch round, and none when no process has room or nothing is buffered."""
        room = sum(
            max(0, max(1, self.options.prefetch) - len(p.jobs)) for p in self._procs if p.ready
        )
        keys = self._buffer.keys_ahead(room) if room else []
        if not keys:
            return
        try:
            done = self.backend.store.done(keys)
        except BrokerUnavailable as exc:  # an outage: the call queue reports it; check next round
            log.debug("could not check idempotency keys before dispatch: %s", exc)
            return
        except JobkitError as exc:  # the receive-time check still stands; at-least-once holds
            log.error("could not check idempotency keys before dispatch: %s", exc)
            return
        self._buffer.succeeded_elsewhere(done)

    def _wait_and_read(self, transport: Transport, timeout: float) -> None:
        """Wait up to `timeout` s for a wake-up, a frame from a job process, room in a job
        process's pipe, or a job process's exit; handle what happened. Never blocks on a pipe."""
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, JobProcess] = {}
        for proc in self._procs:
            if proc.outbox is not None:
                poller.register(proc.outbox.fd, select.POLLIN)
                by_fd[proc.outbox.fd] = proc
            if proc.pidfd is not None:
                poller.register(proc.pidfd, select.POLLIN)
                by_fd[proc.pidfd] = proc
            if proc.inbox is not None and proc.wants_write:
                poller.register(proc.inbox.fd, select.POLLOUT)
                by_fd[proc.inbox.fd] = proc
        touched: list[JobProcess] = []
        for fd, _ in poller.poll(timeout * 1000):
            if fd == self._wake_r:
                os.read(self._wake_r, 4096)
            elif by_fd[fd] not in touched:
                touched.append(by_fd[fd])
        for proc in self._procs:  # without a pidfd, an exit is seen by polling
            if proc.pidfd is None and proc.proc is not None and proc not in touched:
                touched.append(proc)
        for proc in touched:
            proc.flush()
            self._read_from(transport, proc)

    def _read_from(self, transport: Transport, proc: JobProcess) -> None:
        if proc.outbox is None:
            return
        outcomes, ended = proc.read()
        for outcome in outcomes:
            now = time.monotonic()
            if outcome is None:
                self._start_failures = 0
                continue
            self._settle(transport, proc.finish_head(now), outcome)
            self._extend_leases(transport)  # settling may have taken round trips
        if ended or proc.exited:
            self._on_process_exit(transport, proc)
        elif proc.used_up:
            proc.retire()  # it exits now; its exit starts the next process

    def _on_process_exit(self, transport: Transport, proc: JobProcess) -> None:
        if proc.retiring and not proc.jobs:
            proc.kill()  # reaps it (it has exited, or is exiting, holding no job)
            if not self._stop.is_set():
                proc.start()
            return
        self._on_process_died(transport, proc)

    def _on_process_died(self, transport: Transport, proc: JobProcess) -> None:
        was_up = proc.up
        code = proc.proc.poll() if proc.proc else None
        held = proc.kill()
        if not was_up:
            self._start_failures += 1
            log.error("job process %d exited at start-up (exit code %s)", proc.pid, code)
            if self._start_failures >= _MAX_START_FAILURES:
                self._buffer.requeue(held)
                raise ConfigurationError(
                    f"job processes for app {self.options.app_path!r} exit at start-up "
                    f"(exit code {code}); run `python -c 'import ...'` on the app to see why"
                )
        else:
            extra = job_fields(held[0].envelope, held[0].attempt) if held else None
            log.error("job process %d died (exit code %s)", proc.pid, code, extra=extra)
        if held:
            self._settle(
                transport,
                held[0],
                Outcome(ok=False, error=f"WorkerLost: job process died (exit code {code})"),
                killed=True,
            )
            self._buffer.requeue(held[1:])
        if not self._stop.is_set():
            proc.start()

    def _policy(self, job: str) -> RetryPolicy:
        jd = self.app.jobs.get(job)
        return jd.retry if jd is not None else DEFAULT_POLICY

    def _settle(
        self, transport: Transport, running: Running, outcome: Outcome, *, killed: bool = False
    ) -> None:
        """Record, then ack, release or dead-letter one ended attempt. `killed`: its job
        process was killed, so the middleware's ``after_run`` is called here, not there."""
        if outcome.not_started:  # held at shutdown: never ran, so no attempt is used
            self._settling.flush_events()
            self._settling.release_uncounted(transport, running)
            self._buffer.ended(running, succeeded=False)
            return
        env = running.envelope
        decision = decide(env, running.attempt, outcome, self._policy(env.job), self.rng)
        if killed and self.hooks:
            result = run_result(outcome, decision, self._ran_for(running))
            self.hooks.after_run(context_of(env, running.attempt), env, result)
        if decision.action is Action.ACK:
            self._settling.record(running, EventKind.SUCCEEDED, result=outcome.result)
            self._settling.acks.append(running.delivery)
        elif decision.action is Action.RELEASE:
            self._settling.record(running, EventKind.FAILED, outcome.error)
            self._settling.flush_events()
            self._settling.release(transport, running, decision.delay)
        else:
            self._settling.record(running, EventKind.DEAD, decision.reason)
            self._settling.flush_events()
            self._settling.dead_letter(transport, running, decision.reason)
        self._buffer.ended(running, succeeded=decision.action is Action.ACK)
        self.finished += 1
        if self.options.max_jobs is not None and self.finished >= self.options.max_jobs:
            self.stop()

    @staticmethod
    def _ran_for(running: Running) -> timedelta:
        started = running.started
        return timedelta(seconds=time.monotonic() - started if started is not None else 0.0)

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
                "job %s ran past its time limit of %s s: stopping it",
                head.envelope.id,
                limit,
                extra=job_fields(head.envelope, head.attempt),
            )
            held = proc.kill()
            self._settle(
                transport,
                held[0],
                Outcome(ok=False, error=f"TimeLimitExceeded: ran past its time limit of {limit} s"),
                killed=True,
            )
            self._buffer.requeue(held[1:])
            if not self._stop.is_set():
                proc.start()

    def _extend_leases(self, transport: Transport) -> None:
        running = (job for proc in self._procs for job in proc.jobs)
        self._leases.extend(transport, running, time.monotonic())

    def _release_buffered(self, transport: Transport) -> None:
        """Release leased jobs that never started without using an attempt (those whose lease
        lapsed are dropped instead: a release with a stale receipt could free another copy)."""
        now = time.monotonic()
        for job in self._buffer.drain():
            if job.lapsed(now):
                self._leases.dropped([job], now)
                continue
            self._settling.release_uncounted(transport, job)

    def _kill_running(self, transport: Transport) -> None:
        for proc in self._procs:
            for job in proc.kill() if proc.jobs else []:
                log.warning(
                    "released running job %s at shutdown",
                    job.envelope.id,
                    extra=job_fields(job.envelope, job.attempt),
                )
                if self.hooks:
                    result = RunResult(status=RunStatus.INTERRUPTED, duration=self._ran_for(job))
                    env = job.envelope
                    self.hooks.after_run(context_of(env, job.attempt), env, result)
                self._settling.release(transport, job, timedelta(0))
                self._buffer.ended(job, succeeded=False)
