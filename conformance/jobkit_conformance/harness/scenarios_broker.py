"""Scenarios about what the broker keeps: a producer killed right after enqueue, a broker
restart between enqueue and run, and a broker outage while a worker serves.

The last two need the user's broker control (`jobkit_conformance.broker_control`); without it
they raise `NotRun` and their checks are reported as not run. They stop the broker, so the
runner runs them one at a time after every other scenario (`EXCLUSIVE`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from jobkit import App, JobkitError
from jobkit.spi import open_backend
from jobkit_conformance import jobs
from jobkit_conformance.broker_control import BrokerControl
from jobkit_conformance.history import F, JobSpec, OpType
from jobkit_conformance.ledger import ENV_VAR

from .context import Context
from .settings import NotApplicable, NotRun, ScenarioFailed

EXCLUSIVE = frozenset({"broker_restart", "outage"})
"""Scenarios that stop the broker: run alone, after the others."""

PRODUCED = 30  # jobs the killed producer enqueues
_T = TypeVar("_T")


def _control(ctx: Context) -> BrokerControl:
    if ctx.suite.in_process:
        raise NotApplicable("the broker lives in the harness's own process: nothing to restart")
    control = ctx.suite.broker_control
    if control is None:
        raise NotRun(
            "needs broker control (--broker-control CMD, `broker_control` in the config file, "
            "or the pytest_jobkit_broker_control hook)"
        )
    return control


def _retrying(what: str, call: Callable[[], _T], timeout: float = 60.0) -> _T:
    """`call()`, retried until it stops raising (a client reconnecting after a restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except Exception as exc:
            if time.monotonic() >= deadline:
                raise ScenarioFailed(f"{what} still failed {timeout:g} s after: {exc}") from exc
            time.sleep(0.2)


def _broker(ctx: Context, verb: str) -> None:
    control = _control(ctx)
    f = F.BROKER_STOP if verb == "stop" else F.BROKER_START
    ctx.record("nemesis", OpType.INVOKE, f)
    (control.stop if verb == "stop" else control.start)()
    ctx.record("nemesis", OpType.OK, f)


def producer_killed(ctx: Context) -> None:
    """A producer process enqueues 30 jobs, noting each in the ledger as its enqueue returns,
    and is SIGKILLed right after the last; then a worker must run every noted job."""
    if ctx.suite.in_process:
        raise NotApplicable("the broker lives in the harness's process: no other producer")
    ids = [ctx.new_id() for _ in range(PRODUCED)]
    for job_id in ids:
        ctx.job_ids.add(job_id)
        spec = JobSpec(kind="produced", job=jobs.effect.name, args=(job_id,))
        ctx.record("client", OpType.INVOKE, F.ENQUEUE, job_id=job_id, value=spec.to_value())
    log = open(ctx.suite.workdir / "producer.log", "ab")  # noqa: SIM115 - closed below
    cmd = [sys.executable, "-m", "jobkit_conformance.harness.producer", ctx.suite.url, ctx.queue]
    env = {**os.environ, ENV_VAR: str(ctx.suite.ledger.path)}
    with log:
        proc = subprocess.Popen(
            [*cmd, *ids], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        ctx.record("nemesis", OpType.INVOKE, F.PRODUCER, value={"pid": proc.pid})
        try:
            code = proc.wait(timeout=ctx.suite.settings.timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise ScenarioFailed(
                f"the producer did not finish {PRODUCED} enqueues in "
                f"{ctx.suite.settings.timeout:g} s"
            ) from exc
    reported = ctx.suite.ledger.reports()
    ctx.record("nemesis", OpType.OK, F.PRODUCER, value={"pid": proc.pid, "code": code})
    for job_id in ids:
        if job_id in reported:
            ctx.record("client", OpType.OK, F.ENQUEUE, job_id=job_id, at=reported[job_id])
        else:  # the producer died before this enqueue returned: it may or may not be there
            ctx.record("client", OpType.UNKNOWN, F.ENQUEUE, job_id=job_id)
    if code != -9:
        tail = (ctx.suite.workdir / "producer.log").read_text(errors="replace")[-1500:]
        raise ScenarioFailed(f"the producer exited with {code} instead of being killed: {tail}")
    ctx.observe_depth()
    ctx.start_worker()
    done = [i for i in ids if i in reported]
    ctx.settle(lambda: ctx.succeeded(done), f"the {len(done)} reported jobs succeeded")
    ctx.drained()


def broker_restart(ctx: Context) -> None:
    """Jobs enqueued (plain, with keys, delayed past the restart), the broker stopped and
    started again, then workers: every job whose enqueue returned must run."""
    control = _control(ctx)
    now = time.time()
    ids = [ctx.enqueue(jobs.effect, [], JobSpec(kind="restart")) for _ in range(8)]
    ids += [
        ctx.enqueue(jobs.effect, [f"r-{i}"], JobSpec(kind="restart"), key=f"{ctx.queue}-r-{i}")
        for i in range(4)
    ]
    ids += [
        ctx.enqueue(jobs.effect, [], JobSpec(kind="restart_delayed"), not_before=now + 3)
        for _ in range(4)
    ]
    ctx.record(
        "probe",
        OpType.OK,
        F.DEPTH,
        value={"queue": ctx.queue, "depth": ctx.depth(), "before_restart": True},
    )
    del control  # _broker checks it again
    _broker(ctx, "stop")
    _broker(ctx, "start")
    depth = _retrying("reading the queue after the restart", ctx.depth)
    ctx.record(
        "probe", OpType.OK, F.DEPTH, value={"queue": ctx.queue, "depth": depth, "restarted": True}
    )
    ctx.start_worker()
    ctx.settle(lambda: ctx.succeeded(ids), "every job enqueued before the restart succeeded")
    ctx.drained()


def _enqueue_until_accepted(ctx: Context, app: App, timeout: float) -> str | None:
    """Enqueue one job, again (a fresh id each time) until an enqueue is accepted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.enqueue(jobs.effect, [], JobSpec(kind="after_outage"), app=app)
        if ctx.history.select(f=F.ENQUEUE, type=OpType.OK, job_id=job):
            return job
        time.sleep(0.5)
    return None


def _enqueue_during_outage(ctx: Context) -> None:
    try:
        app = App("jobkit-conformance-outage", backend=open_backend(ctx.suite.url))
    except JobkitError as exc:  # refusing to open while the broker is down is honest too
        ctx.notes.append(f"outage: opening the backend while the broker was down: {exc}")
        return
    try:
        ctx.enqueue(jobs.effect, [], JobSpec(kind="during_outage"), app=app)
    finally:
        app.close()


def outage(ctx: Context) -> None:
    """A worker serves jobs; the broker is stopped for `settings.outage` seconds mid-run and
    started again. Jobs enqueued before must all complete, jobs enqueued after must run, and
    the worker process must be the same one throughout."""
    _control(ctx)
    worker = ctx.start_worker()
    before = [
        ctx.enqueue(jobs.sleep, [1.0], JobSpec(kind="outage", duration=1.0)) for _ in range(4)
    ]
    before += [ctx.enqueue(jobs.effect, [], JobSpec(kind="outage")) for _ in range(8)]
    ctx.wait(lambda: len(ctx.running()) >= 1, "a job is running")
    _broker(ctx, "stop")
    try:
        # an enqueue during the outage must raise; one that returns must not be lost. It runs
        # beside the outage: a client that blocks until the broker is back must not hold it up
        during = threading.Thread(target=_enqueue_during_outage, args=(ctx,), daemon=True)
        during.start()
        time.sleep(ctx.suite.settings.outage)  # the outage is the fault: this sleep IS it
    finally:
        _broker(ctx, "start")
    during.join(timeout=ctx.suite.settings.timeout)
    app = App("jobkit-conformance-outage", backend=open_backend(ctx.suite.url))
    try:
        after = _enqueue_until_accepted(ctx, app, timeout=60)
    finally:
        app.close()
    wanted = before + ([after] if after else [])
    ctx.settle(
        lambda: ctx.succeeded(wanted),
        "the jobs enqueued before and after the outage succeeded",
        timeout=ctx.suite.settings.timeout + ctx.suite.settings.outage,
    )
    ctx.record(
        "probe",
        OpType.OK,
        F.WORKER,
        value={"name": worker.name, "pid": worker.pid, "alive": worker.alive(), "outage": True},
    )
    _retrying("reading the queue after the outage", ctx.depth)
    ctx.drained()
