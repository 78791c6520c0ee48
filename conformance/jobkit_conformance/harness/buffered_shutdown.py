"""The buffered-shutdown scenario: SIGTERM to a worker that has leased jobs ahead (one job
process, prefetch 4) of single-attempt jobs. The running job finishes; the buffered ones never
started, so they must be released without using their only attempt, and each must run exactly
once on the next worker. No job may start on the stopping worker after the SIGTERM."""

from __future__ import annotations

from jobkit_conformance import contract_jobs
from jobkit_conformance.history import F, JobSpec

from .context import Context
from .settings import ScenarioFailed

JOBS = 5
SECONDS = 1.0


def shutdown_buffered(ctx: Context) -> None:
    first = ctx.start_worker(concurrency=1, prefetch=4)
    ids = [
        ctx.enqueue(contract_jobs.once, [SECONDS], JobSpec(kind="buffered", duration=SECONDS))
        for _ in range(JOBS)
    ]
    ctx.wait(lambda: len(ctx.running()) >= 1, "the first job is running")
    ctx.try_wait(lambda: False, timeout=0.3)  # the receiver leases the others meanwhile
    ctx.fault(F.TERM, first)
    if first.wait(ctx.suite.settings.grace.total_seconds() + 10) is None:
        raise ScenarioFailed("the worker did not exit within its grace after SIGTERM")
    ctx.start_worker(concurrency=2)
    ctx.settle(lambda: ctx.succeeded(ids), "every single-attempt job ran")
    ctx.drained()
    ctx.try_wait(lambda: False, timeout=ctx.lease)  # a second run would show here
