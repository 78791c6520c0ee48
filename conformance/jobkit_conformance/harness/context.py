"""What a scenario works with: its own queue, the client, the nemesis, workers and the probe.

Every action is recorded in the scenario's `History` as it happens; at the end the ledger's rows
for the scenario's jobs and a last look at the dead-letter queue are added.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobkit import App, EnqueueOptions, JobDef, JobkitError
from jobkit.spi import Envelope
from jobkit_conformance import jobs
from jobkit_conformance.history import F, History, JobSpec, Op, OpType
from jobkit_conformance.ledger import RunRow

from .settings import ScenarioFailed, Suite
from .workers import POLL, InProcessWorker, ProcessWorker, WorkerHandle, wait_for


class Context:
    def __init__(self, suite: Suite, scenario: str) -> None:
        self.suite = suite
        self.scenario = scenario
        self.queue = f"{suite.namespace}-{scenario}"
        self.history = History()
        self.job_ids: set[str] = set()
        self.sent: dict[str, tuple[Envelope, bytes]] = {}
        self.workers: list[WorkerHandle] = []
        self.notes: list[str] = []  # what did not settle in time, shown with failed checks
        self._lock = threading.Lock()
        self.claim()

    def claim(self) -> None:
        """Record what the backend declares for this run's settings: the bounds the timing
        and recovery checks hold it to (see `jobkit.Capabilities`)."""
        caps = self.suite.backend.capabilities
        lease = self.suite.settings.lease
        self.record(
            "harness",
            OpType.OK,
            F.CLAIM,
            value={
                "backend": caps.name,
                "lease_s": lease.total_seconds(),
                "poll_s": POLL.total_seconds(),
                "redelivery_bound_s": self.redelivery_bound,
                "scheduling_precision_s": caps.scheduling_precision.total_seconds(),
                "delay_rounding": caps.delay_rounding,
                "time_limit_margin_s": caps.time_limit_margin.total_seconds(),
                "time_limits": caps.time_limits,
            },
        )

    @property
    def lease(self) -> float:
        return self.suite.settings.lease.total_seconds()

    @property
    def redelivery_bound(self) -> float:
        """The backend's declared redelivery bound for this run's lease, in seconds."""
        caps = self.suite.backend.capabilities
        return caps.redelivery_bound(self.suite.settings.lease).total_seconds()

    def record(
        self,
        process: str,
        type: OpType,
        f: F,
        *,
        job_id: str | None = None,
        value: dict[str, Any] | None = None,
        at: float | None = None,
    ) -> Op:
        op = Op(
            process=process,
            type=type,
            f=f,
            time=time.time() if at is None else at,
            job_id=job_id,
            value=value or {},
        )
        with self._lock:
            self.history.add(op)
        return op

    # -- client -----------------------------------------------------------------------------

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def enqueue(
        self,
        job: JobDef[Any, Any],
        args: Sequence[Any],
        spec: JobSpec,
        *,
        not_before: float | None = None,
        priority: int | None = None,
        key: str | None = None,
        app: App | None = None,
        job_id: str | None = None,
        queue: str | None = None,
    ) -> str:
        """Enqueue `job(token, *args)` on this scenario's queue (or `queue`); record invoke and
        outcome."""
        token = job_id or self.new_id()
        full_args = (token, *args)
        spec = JobSpec(
            **{
                **spec.__dict__,
                "job": job.name,
                "args": full_args,
                "key": key,
                "not_before": not_before,
                "priority": priority or 0,
                "max_attempts": job.retry.max_attempts,
                "time_limit": job.time_limit.total_seconds() if job.time_limit else None,
            }
        )
        with self._lock:  # a pulse thread may enqueue while the scenario reads the ledger
            self.job_ids.add(token)
        self.record("client", OpType.INVOKE, F.ENQUEUE, job_id=token, value=spec.to_value())
        options = EnqueueOptions(
            queue=queue or self.queue,
            job_id=token,
            idempotency_key=key,
            priority=priority,
            not_before=datetime.fromtimestamp(not_before, UTC) if not_before else None,
        )
        try:
            with self.suite.lock:  # the backend may not be thread-safe; enqueues are few
                (app or self.suite.app).enqueue(job, full_args, {}, options)
        except JobkitError as exc:
            self.record(
                "client",
                OpType.FAIL,
                F.ENQUEUE,
                job_id=token,
                value={"error": contract_error(exc), "message": str(exc)},
            )
        except Exception as exc:
            self.record(
                "client",
                OpType.UNKNOWN,
                F.ENQUEUE,
                job_id=token,
                value={"error": type(exc).__name__, "message": str(exc)},
            )
        else:
            self.record("client", OpType.OK, F.ENQUEUE, job_id=token)
        return token

    def enqueue_many(
        self, job: JobDef[Any, Any], args: Sequence[Sequence[Any]], spec: JobSpec
    ) -> list[str]:
        """Enqueue `job(token, *a)` for each `a` of `args` in one `App.enqueue_many` call on this
        scenario's queue; record each job's invoke and the batch's outcome per job."""
        tokens = [self.new_id() for _ in args]
        calls: list[tuple[JobDef[Any, Any], tuple[Any, ...], dict[str, Any], EnqueueOptions]] = []
        for token, a in zip(tokens, args, strict=True):
            full_args = (token, *a)
            value = JobSpec(
                **{**spec.__dict__, "job": job.name, "args": full_args,
                   "max_attempts": job.retry.max_attempts}
            ).to_value()  # fmt: skip
            self.job_ids.add(token)
            self.record("client", OpType.INVOKE, F.ENQUEUE, job_id=token, value=value)
            calls.append((job, full_args, {}, EnqueueOptions(queue=self.queue, job_id=token)))
        outcome, error = OpType.OK, {}
        try:
            with self.suite.lock:
                self.suite.app.enqueue_many(calls)
        except Exception as exc:
            outcome = OpType.FAIL if isinstance(exc, JobkitError) else OpType.UNKNOWN
            error = {"error": type(exc).__name__, "message": str(exc)}
        for token in tokens:
            self.record("client", outcome, F.ENQUEUE, job_id=token, value=error)
        return tokens

    def publish(
        self, job: JobDef[Any, Any], args: Sequence[Any], spec: JobSpec, *, key: str | None = None
    ) -> str:
        """Send `job(token, *args)` below the App (`Backend.send`) so that `duplicate` can send
        the very same bytes again."""
        token = self.new_id()
        full_args = (token, *args)
        env = Envelope(
            id=token,
            job=job.name,
            args=full_args,
            queue=self.queue,
            max_attempts=job.retry.max_attempts,
            idempotency_key=key,
        )
        spec = JobSpec(
            **{**spec.__dict__, "job": job.name, "args": full_args, "key": key,
               "max_attempts": job.retry.max_attempts}
        )  # fmt: skip
        self.job_ids.add(token)
        self.sent[token] = (env, env.encode())
        self.record("client", OpType.INVOKE, F.ENQUEUE, job_id=token, value=spec.to_value())
        with self.suite.lock:
            self.suite.backend.send([self.sent[token]])
        self.record("client", OpType.OK, F.ENQUEUE, job_id=token)
        return token

    def duplicate(self, job_id: str) -> None:
        """Publish the envelope of `job_id` again, byte for byte (a duplicate delivery, as a
        producer retry or a broker fail-over makes)."""
        self.record("nemesis", OpType.INVOKE, F.DUPLICATE, job_id=job_id)
        with self.suite.lock:
            self.suite.backend.send([self.sent[job_id]])
        self.record("nemesis", OpType.OK, F.DUPLICATE, job_id=job_id)

    # -- workers and faults -----------------------------------------------------------------

    def start_worker(
        self,
        *,
        concurrency: int | None = None,
        queues: Sequence[str] | None = None,
        prefetch: int = 1,
        unknown_job_timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> WorkerHandle:
        """Start a worker on this scenario's queue. `env` is added to a worker process's
        environment (in-process workers share the harness's)."""
        s = self.suite
        queues = list(queues or [self.queue])
        n = len(self.workers)
        name = f"{self.scenario}-{n}"
        worker: WorkerHandle
        if s.in_process:
            worker = InProcessWorker(
                name=name,
                app=s.app,
                backend=s.backend,
                queues=queues,
                concurrency=concurrency or s.settings.concurrency,
                lease=s.settings.lease,
                grace=s.settings.grace,
                prefetch=prefetch,
                unknown_job_timeout=unknown_job_timeout,
            )
        else:
            worker = ProcessWorker(
                name=name,
                backend_url=s.url,
                queues=queues,
                concurrency=concurrency or s.settings.concurrency,
                lease=s.settings.lease,
                grace=s.settings.grace,
                prefetch=prefetch,
                ledger=s.ledger.path,
                log_path=s.workdir / f"worker-{name}.log",
                unknown_job_timeout=unknown_job_timeout,
                extra_env=env,
            )
        self.workers.append(worker)
        self.record("nemesis", OpType.INVOKE, F.WORKER, value={"name": name, "pid": worker.pid})
        return worker

    def fault(self, f: F, worker: WorkerHandle) -> None:
        action = {
            F.KILL: worker.kill,
            F.TERM: worker.term,
            F.STOP: worker.stop,
            F.CONT: worker.cont,
        }
        self.record("nemesis", OpType.INVOKE, f, value={"worker": worker.name})
        action[f]()
        self.record("nemesis", OpType.OK, f, value={"worker": worker.name, "pid": worker.pid})

    def kill_job_process(self, pid: int, *, target: str) -> None:
        """SIGKILL one job process (not its worker); `target` says what it is, for reports."""
        self.record("nemesis", OpType.INVOKE, F.KILL, value={"pid": pid, "target": target})
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        self.record("nemesis", OpType.OK, F.KILL, value={"pid": pid, "target": target})

    def stop_workers(self) -> None:
        for w in self.workers:
            if w.alive():
                w.cont()
                w.term()
        grace = self.suite.settings.grace.total_seconds() + 10
        for w in self.workers:
            code = w.wait(grace)
            self.record(
                "nemesis", OpType.OK, F.WORKER, value={"name": w.name, "code": code, "alive": False}
            )
            w.close()

    # -- observation ------------------------------------------------------------------------

    def replay(self, ids: list[str]) -> int:
        """Move these dead letters back through the backend under test; records REPLAY as
        invoke then ok (a replayed job may start before the call returns)."""
        invoked = self.record("client", OpType.INVOKE, F.REPLAY, value={"ids": ids})
        with self.suite.lock:
            count = self.suite.backend.replay(self.queue, ids=ids)
        self.record(
            "client",
            OpType.OK,
            F.REPLAY,
            value={"ids": ids, "count": count, "invoked_at": invoked.time},
        )
        return count

    def runs(self) -> list[RunRow]:
        with self._lock:
            ids = set(self.job_ids)
        return self.suite.ledger.runs(ids)

    def wait(self, condition: Any, what: str, timeout: float | None = None) -> None:
        limit = self.suite.settings.timeout if timeout is None else timeout
        dead: list[str] = []

        def done() -> bool:
            if condition():
                return True
            if self.workers and not any(w.alive() for w in self.workers):
                dead.append("every worker of the scenario has exited")
                return True
            return False

        if not wait_for(done, timeout=limit, interval=0.05):
            raise ScenarioFailed(f"timed out after {limit:g} s waiting until {what}")
        if dead and not condition():
            raise ScenarioFailed(f"{dead[0]} while waiting until {what}")

    def settle(self, condition: Any, what: str, timeout: float | None = None) -> bool:
        """Wait until `condition` holds (the jobs settled), at most `timeout` (the run's
        timeout by default), or until every worker of the scenario has exited. Not holding is
        not an error here: the checkers judge what happened."""
        limit = self.suite.settings.timeout if timeout is None else timeout

        def done() -> bool:
            return bool(condition()) or bool(
                self.workers and not any(w.alive() for w in self.workers)
            )

        wait_for(done, timeout=limit, interval=0.05)
        if condition():
            return True
        if any(w.alive() for w in self.workers) or not self.workers:
            self.notes.append(f"{self.scenario}: gave up after {limit:g} s waiting until {what}")
        else:
            self.notes.append(f"{self.scenario}: every worker exited while waiting until {what}")
            for w in self.workers:
                if isinstance(w, ProcessWorker):
                    self.notes += [f"  {w.name}: {line}" for line in w.log_tail(5).splitlines()]
        return False

    def drained(self, queue: str | None = None) -> None:
        """Give the broker up to the run's timeout to hold nothing more for this queue (everything
        acknowledged or dead-lettered), then record its depth as the scenario's final one.

        Drained means two consecutive reads, one poll apart, found nothing; the second is the
        one recorded. A single zero read is not enough: a broker may hand a message over in
        two steps (kombu on Redis: BRPOP takes it off the list, then a separate command puts
        it in ``unacked``), and a read between them sees nothing although the message is
        only in flight. A message that is really left over shows in the next read."""
        last: list[int] = [-1]

        queue = queue or self.queue

        def empty_twice() -> bool:
            depth = self.suite.probe.depth(queue)
            settled = depth == 0 and last[0] == 0
            last[0] = depth
            return settled

        self.try_wait(empty_twice, timeout=max(self.lease * 3, self.suite.settings.timeout))
        self.record(
            "probe",
            OpType.OK,
            F.DEPTH,
            value={"queue": queue, "depth": last[0], "final": True},
        )

    def serving(self, queue: str | None = None) -> bool:
        """Block until a worker has run a job of kind "ready" sent now on `queue` (this
        scenario's by default): from then a worker is polling it. At most the run's timeout;
        False if none ran (noted, as `settle` does)."""
        job_id = self.enqueue(jobs.effect, [], JobSpec(kind="ready"), queue=queue)
        return self.settle(lambda: self.succeeded([job_id]), "a worker served its first job")

    def try_wait(self, condition: Any, timeout: float) -> bool:
        return wait_for(condition, timeout=timeout, interval=0.05)

    def succeeded(self, ids: Sequence[str]) -> bool:
        done = {r.job_id for r in self.runs() if r.outcome == "ok"}
        return all(i in done for i in ids)

    def started(self, ids: Sequence[str], n: int = 1) -> bool:
        rows = self.runs()
        return all(sum(1 for r in rows if r.job_id == i) >= n for i in ids)

    def running(self) -> list[RunRow]:
        return [r for r in self.runs() if r.end is None]

    def dead_ids(self) -> set[str]:
        return {d.id for d in self.suite.probe.dead(self.queue)}

    def depth(self) -> int:
        return self.suite.probe.depth(self.queue)

    def observe_dead(self) -> None:
        entries = [
            {"id": d.id, "reason": d.reason, "body_hex": d.body.hex()}
            for d in self.suite.probe.dead(self.queue)
        ]
        self.record("probe", OpType.OK, F.DEAD, value={"queue": self.queue, "entries": entries})

    def observe_depth(self) -> None:
        self.record("probe", OpType.OK, F.DEPTH, value={"queue": self.queue, "depth": self.depth()})

    def finish(self) -> History:
        """Stop the workers, read the ledger and the dead-letter queue; the full history."""
        self.stop_workers()
        self.observe_dead()
        history = History(self.history.ops)
        history.extend(self.suite.ledger.history(self.job_ids))
        return history.sorted()


def contract_error(exc: BaseException) -> str:
    """The name of the jobkit error class `exc` is checked as: its own if jobkit defines it,
    else its nearest base that jobkit defines (a backend's own subclass of `BrokerUnavailable`
    is a `BrokerUnavailable` to the contract)."""
    for cls in type(exc).__mro__:
        if cls.__module__ == "jobkit.errors":
            return cls.__name__
    return type(exc).__name__
