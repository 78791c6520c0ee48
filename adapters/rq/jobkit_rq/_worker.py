"""RQ worker classes with jobkit's settings, and the process that supervises them.

`jobkit worker` on ``rq+redis://`` starts `WorkerOptions.concurrency` RQ workers (each its own
process, each one job at a time, as RQ's workers are) of the configured class, forking `Worker`
or `SimpleWorker`, and supervises them: it runs the maintenance (`_maintenance`), forwards
SIGTERM/SIGINT (RQ's warm shutdown: running jobs finish), and after `WorkerOptions.grace`
signals again (RQ's cold shutdown: running jobs are stopped; they are retried). It also stops
the workers for `burst` (queues, delayed jobs and running jobs all empty) and `max_jobs`.

A Redis outage is waited out, never a reason to stop: the RQ worker's bookkeeping of a job that
has run (`handle_execution_ended`, `handle_job_success`, which carries jobkit's success record)
waits for Redis; the forking worker keeps watching its work-horse through failed heartbeats;
and an RQ `work()` loop that ends on an error it was not asked to stop for is started again in
the same process once Redis answers.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from multiprocessing.sharedctypes import Synchronized
from types import FrameType
from typing import Any

import redis
from rq import SimpleWorker, Worker
from rq.job import Job
from rq.worker import BaseWorker, WorkerStatus

from jobkit.spi import WorkerOptions
from jobkit_rq._heartbeat import Heartbeat, past_hard_limit
from jobkit_rq._maintenance import Maintenance
from jobkit_rq._migration import Migration
from jobkit_rq._ops import stats
from jobkit_rq._runtime import Runtime
from jobkit_rq._settings import Settings
from jobkit_rq._wire import DEFER_SUCCESS, EXECUTION, SERIALIZER

logger = logging.getLogger("jobkit.rq")

_PR_SET_PDEATHSIG = 1


class _Hardened:
    """What jobkit changes in RQ's workers (mixed into `Worker` and `SimpleWorker`): a short
    heartbeat TTL for the running job's StartedJobRegistry entry, registry cleaning left to
    the supervisor's maintenance, and (forking) a work-horse killed 1 s after its time limit
    (RQ waits 60 s)."""

    jobkit_settings: Settings
    last_cleaned_at: Any
    _state: str

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return self.jobkit_settings.heartbeat_ttl

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        """As RQ's, in one round trip: RQ sends its three commands (HSET, EXPIRE, EXPIRE) one at
        a time when no pipeline is given, which its work loop does twice per job."""
        if pipeline is not None:
            super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
            return
        with self.connection.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            super().heartbeat(timeout, pipeline=pipe)  # type: ignore[misc]
            pipe.execute()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        """As RQ's, without writing again a state the worker is in: RQ's loop sets IDLE after
        each job and again before the next dequeue. The worker alone writes its state."""
        if pipeline is None and state == self._state:
            return
        super().set_state(state, pipeline)  # type: ignore[misc]

    def clean_registries(self) -> None:
        from rq.utils import now

        self.last_cleaned_at = now()

    def perform_job(self, job: Job, queue: Any, execution: Any) -> bool:
        """As RQ's, telling jobkit's runtime which execution this is (`EXECUTION`), so that a
        copy of a job that another execution is running is dropped, not run beside it."""
        setattr(job, EXECUTION, execution.composite_key if execution is not None else "")
        setattr(job, DEFER_SUCCESS, True)  # committed in `handle_job_success`'s transaction
        return bool(super().perform_job(job, queue, execution))  # type: ignore[misc]

    def handle_execution_ended(self, job: Job, queue: Any, heartbeat_ttl: int) -> None:
        """As RQ's (the job's end time and a heartbeat), waiting out a Redis outage as
        `handle_job_success` does, which follows it."""
        handle = functools.partial(
            super().handle_execution_ended,  # type: ignore[misc]
            job, queue, heartbeat_ttl,
        )  # fmt: skip
        _through_outage(job, f"file job {job.id} ended", handle)

    def handle_job_success(
        self, job: Job, queue: Any, started_job_registry: Any, execution: Any
    ) -> None:
        """As RQ's, waiting out a Redis outage; then jobkit's success record, unless RQ's
        transaction carried it.

        RQ lets a Redis error here fail the job it has just run, or end `work()`; jobkit's
        success record rides in this transaction, so it waits for Redis and commits instead
        (RQ's success handling builds its transaction afresh on each call)."""
        handle = functools.partial(
            super().handle_job_success,  # type: ignore[misc]
            job=job, queue=queue, started_job_registry=started_job_registry, execution=execution,
        )  # fmt: skip
        runtime = _through_outage(job, f"file job {job.id} finished", handle)
        if runtime is not None:
            runtime.success_committed(job)


def _through_outage(job: Job, what: str, fn: Callable[[], object]) -> Runtime | None:
    """`fn()` through `Runtime.through_outage` of `job`'s runtime (a jobkit job: it waits for
    Redis), or once (a job of another class). Returns the runtime, if any."""
    runtime: Runtime | None = getattr(type(job), "jobkit_runtime", None)
    if runtime is None:
        fn()
    else:
        runtime.through_outage(what, fn)
    return runtime


def libc_prctl() -> Any:
    """libc's prctl, or None where there is none. A worker looks it up once and passes it to
    `die_with_parent` in each work-horse it forks: a `ctypes.CDLL` made in the horse costs it
    page faults, on every job."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(prctl: Any = None) -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed worker takes its
    running job with it, as a killed process group would, so the job is retried rather than
    finished by an orphan nobody watches). `prctl`: `libc_prctl()`'s answer, looked up here
    if not given."""
    parent = os.getppid()
    prctl = prctl if prctl is not None else libc_prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


class NativeWorker(Worker):
    """RQ's forking `Worker` as it is (``profile=native``), except that its work-horse dies with
    it, as in a container kill (RQ puts the work-horse in a process group of its own)."""

    _prctl: Any = None

    def main_work_horse(self, job: Job, queue: Any) -> None:
        die_with_parent(self._prctl)
        super().main_work_horse(job, queue)


class JobkitWorker(_Hardened, NativeWorker):
    def maintain_heartbeats(self, job: Job, execution: Any) -> None:
        if past_hard_limit(job):
            logger.error("job %s[%s] ran past its time limit: killing it", job.func_name, job.id)
            self.kill_horse()
        try:
            super().maintain_heartbeats(job, execution)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # RQ's monitor would end `work()` here, leaving the work-horse unwatched: keep
            # watching, and beat again next interval (the maintenance allows for the lapse)
            logger.warning("heartbeat of job %s: %s (retrying)", job.id, exc)


class JobkitSimpleWorker(_Hardened, SimpleWorker):
    _heartbeat: Heartbeat | None = None

    def execute_job(self, job: Job, queue: Any) -> None:
        """As RQ's, keeping the job's heartbeat and making its time limit hard (`Heartbeat`)."""
        execution = self.prepare_execution(job)
        if self._heartbeat is None:
            self._heartbeat = Heartbeat(self, self.job_monitoring_interval)
        with self._heartbeat.running(job, execution):
            self.perform_job(job, queue, execution)
        self.set_state(WorkerStatus.IDLE)


def _stop_listening(worker: BaseWorker) -> None:
    """End the pubsub thread of an RQ worker whose `work()` ended without its teardown (RQ's
    teardown needs Redis). Never raises."""
    thread = worker.pubsub_thread
    if thread is None:
        return
    thread.stop()
    thread.join(timeout=3)
    try:
        if worker.pubsub is not None:
            worker.pubsub.close()
    except redis.RedisError:
        pass


def worker_class(settings: Settings) -> type[BaseWorker]:
    if not settings.hardened:
        return SimpleWorker if settings.worker == "simple" else NativeWorker
    return JobkitSimpleWorker if settings.worker == "simple" else JobkitWorker


def build_worker(runtime: Runtime, options: WorkerOptions, name: str | None = None) -> BaseWorker:
    settings = runtime.settings
    cls = worker_class(settings)
    kwargs: dict[str, Any] = {}
    if settings.hardened:
        beat = max(1, round(settings.heartbeat.total_seconds()))
        kwargs.update(job_monitoring_interval=beat, worker_ttl=20, maintenance_interval=3600)
    worker = cls(
        [runtime.queue(q) for q in options.queues],
        connection=runtime.client,
        serializer=SERIALIZER,
        job_class=runtime.job_class,
        name=name,
        **kwargs,
    )
    if settings.hardened:
        worker.jobkit_settings = settings  # type: ignore[attr-defined]
    return worker


def restore_exports(runtime: Runtime) -> None:
    """Give back jobs whose migration export lease ran out. Logs errors, never raises."""
    try:
        Migration(runtime).restore_expired()
    except Exception as exc:
        logger.warning("returning expired migration exports: %s (retrying)", exc)


class Supervisor:
    """Runs in the `jobkit worker` process; see the module docstring. Not thread-safe."""

    def __init__(self, runtime: Runtime, options: WorkerOptions) -> None:
        self.runtime = runtime
        self.options = options
        self.ended: Synchronized[int] = multiprocessing.get_context("fork").Value("i", 0)
        self.children: list[Any] = []
        self._signals = 0
        self._first_signal_at = 0.0

    def _serve(self, index: int) -> None:
        """One RQ worker (in a child process)."""
        prctl = libc_prctl()
        die_with_parent(prctl)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        counter = self.ended

        def ended() -> None:
            with counter.get_lock():
                counter.value += 1

        self.runtime.ended = ended
        name = f"{self.options.extra.get('hostname') or f'jobkit-{os.getpid()}'}.{index}"
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        for restart in itertools.count():
            worker = build_worker(
                self.runtime, self.options, name=f"{name}.{restart}" if restart else name
            )
            if isinstance(worker, NativeWorker):
                worker._prctl = prctl
            try:
                worker.work(logging_level=level, with_scheduler=False)
            except Exception:  # SystemExit (RQ's cold shutdown) ends the process
                logger.exception("RQ worker %s failed", worker.name)
            if not self.runtime.settings.hardened or worker._shutdown_requested_date is not None:
                return  # asked to stop (or the native profile: RQ's own behaviour)
            # RQ's work() ends on any error outside its dequeue (a Redis outage meeting the
            # worker's bookkeeping): serve on, as RQ's dequeue does through an outage. A job
            # the old worker held is recovered by the maintenance.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # idle here: nothing to finish
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            logger.warning("RQ worker %s quit without being asked to: starting another", name)
            _stop_listening(worker)
            if isinstance(worker, JobkitSimpleWorker) and worker._heartbeat is not None:
                worker._heartbeat.stop()  # the next worker starts its own
            self.runtime.through_outage("reach Redis", self.runtime.client.ping)

    def run(self) -> None:
        ctx = multiprocessing.get_context("fork")
        for index in range(max(1, self.options.concurrency)):
            child = ctx.Process(target=self._serve, args=(index,), name=f"jobkit-rq-{index}")
            child.start()
            self.children.append(child)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for child in self.children:
                child.join(timeout=1)

    def _replace_dead_children(self) -> None:
        """A worker process that died while we are not stopping (killed at a hard time limit,
        or crashed) is replaced: the `jobkit worker` keeps serving with its concurrency. Its job
        is recovered by the maintenance."""
        ctx = multiprocessing.get_context("fork")
        for index, child in enumerate(self.children):
            if child.is_alive() or child.exitcode == 0:
                continue
            logger.warning(
                "worker process %s ended (exit code %s): starting another",
                child.pid,
                child.exitcode,
            )
            child.join(timeout=0)
            fresh = ctx.Process(target=self._serve, args=(index,), name=f"jobkit-rq-{index}")
            fresh.start()
            self.children[index] = fresh

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self._first_signal_at = time.monotonic()
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, sig: int) -> None:
        for child in self.children:
            if child.is_alive() and child.pid is not None:
                try:
                    os.kill(child.pid, sig)
                except ProcessLookupError:
                    pass

    def _loop(self) -> None:
        settings = self.runtime.settings
        maintenance: Maintenance | None = None
        if settings.hardened:
            maintenance = Maintenance(
                self.runtime.client,
                [self.runtime.queue(q) for q in self.options.queues],
                build_worker(self.runtime, self.options, name=f"jobkit-maint-{os.getpid()}"),
                settings.maintenance,
                grace=timedelta(seconds=settings.heartbeat_ttl) + settings.heartbeat,
            )
        every = settings.maintenance.total_seconds()
        poll = max(self.options.poll.total_seconds(), 0.2)
        next_check = 0.0
        empty_for = 0
        cold_sent = False
        while True:
            if not self._signals:
                self._replace_dead_children()
            if not any(child.is_alive() for child in self.children):
                break
            if maintenance is not None:
                maintenance.run_once()
                restore_exports(self.runtime)
            if self._signals and not cold_sent:
                waited = time.monotonic() - self._first_signal_at
                if self._signals > 1 or waited >= self.options.grace.total_seconds():
                    cold_sent = True
                    logger.warning("jobs still running after the grace period: stopping them")
                    self._signal_children(signal.SIGTERM)
            now = time.monotonic()
            if not self._signals and now >= next_check:
                next_check = now + poll
                if self._should_stop(empty_for):
                    self._on_signal(signal.SIGTERM, None)
                empty_for = self._empty_for(empty_for)
            self._sleep(min(every, poll))

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(c.is_alive() for c in self.children):
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def _should_stop(self, empty_for: int) -> bool:
        if self.options.max_jobs is not None and self.ended.value >= self.options.max_jobs:
            return True
        return self.options.burst and empty_for >= 2

    def _empty_for(self, empty_for: int) -> int:
        if not self.options.burst:
            return 0
        try:
            busy = sum(
                s.ready + s.in_flight + s.delayed
                for s in stats(self.runtime, list(self.options.queues))
            )
        except Exception:
            return 0
        return empty_for + 1 if busy == 0 else 0
