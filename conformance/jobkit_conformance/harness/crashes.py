"""Crash variants: volume under repeated worker crashes and stalls, and a job process killed
while a grandchild it started still holds its inherited file descriptors.

Like every scenario these only act and record; the checkers judge the history.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from jobkit_conformance import jobs
from jobkit_conformance.history import F, JobSpec

from .context import Context

BATCH = 500
"""Jobs per `App.enqueue_many` call."""

MIN_RATE = 40.0
"""Jobs per second the volume scenario waits for at the least before giving up (moto's SQS
does about 120 end to end on a loaded machine)."""


def _plan(kills: int, stops: int) -> list[F]:
    """The faults in order, stops spread among the kills: kill, stop, kill, kill, ..."""
    plan = [F.KILL] * kills
    for i in range(stops):
        plan.insert(min(len(plan), 1 + i * (kills + 1) // max(1, stops)), F.STOP)
    return plan


def volume(ctx: Context) -> None:
    """The profile's `volume_jobs` no-op jobs (5,000 by default), sent with `enqueue_many` in
    batches of 500 while two workers serve them; at even steps of progress one worker's whole
    process group is SIGKILLed and a fresh worker started, or a worker is SIGSTOPped for 1.5
    leases and then continued, so its late acknowledgements race the redelivery.

    Why 5,000: a backend that loses 1 send in 300 at random loses none of 5,000 with
    probability (299/300)^5000 = e^-16.7 = 5.6e-8, so it fails every run, not by chance (1,000
    sends would miss it 3.5% of the time). One losing 1 in 1,000 is caught with
    probability 1 - 0.999^5000 = 0.993; the full profile's 30,000 sends catch 1 in 2,000 with
    probability 1 - 3e-7. The duplicates a crash may cause are counted, and only those that no
    fault explains fail: the last tenth of the jobs is sent after the last fault, so a backend
    that delivers twice without a reason is seen.
    """
    soak = ctx.suite.settings.soak
    n = soak.volume_jobs
    last_wave = n // 10
    ctx.start_worker()
    ctx.start_worker()
    _send(ctx, n - last_wave)
    ledger = ctx.suite.ledger

    def done() -> int:
        return ledger.succeeded_count(jobs.noop.name)

    progress = {"count": -1, "at": 0.0}
    stall = max(10.0, 5 * ctx.lease)

    def reached(target: int) -> bool:
        """`target` jobs succeeded, or none succeeded for `stall` s (lost jobs never will)."""
        count, now = done(), time.monotonic()
        if count != progress["count"]:
            progress.update(count=count, at=now)
        return count >= target or now - progress["at"] > stall

    plan = _plan(soak.kills, 0 if ctx.suite.in_process else soak.stops)
    patience = ctx.suite.settings.timeout + n / MIN_RATE
    for i, fault in enumerate(plan):
        target = (n - last_wave) * (i + 1) // (len(plan) + 1)
        progress.update(count=-1)
        ctx.settle(lambda t=target: reached(t), f"{target} of {n} volume jobs succeeded",
                   timeout=patience)  # fmt: skip
        alive = [w for w in ctx.workers if w.alive()]
        if not alive:
            break
        victim = alive[0]
        ctx.fault(fault, victim)
        if fault is F.KILL:
            victim.wait(10)
            ctx.start_worker()
        else:
            ctx.try_wait(lambda: False, timeout=ctx.lease * 1.5)  # the stall IS the fault
            ctx.fault(F.CONT, victim)
    # sent after the last fault: none of these may run twice
    _send(ctx, last_wave)
    progress.update(count=-1)
    ctx.settle(lambda: reached(n), f"all {n} volume jobs succeeded", timeout=patience)
    if done() < n:
        ctx.notes.append(f"volume: {done()} of {n} jobs succeeded, then none for {stall:g} s")
    ctx.drained()
    # a spurious late copy (a stalled worker's ack that did not count) shows within a lease
    ctx.try_wait(lambda: False, timeout=ctx.lease)


def _send(ctx: Context, n: int) -> None:
    for start in range(0, n, BATCH):
        ctx.enqueue_many(jobs.noop, [[] for _ in range(min(BATCH, n - start))],
                         JobSpec(kind="volume"))  # fmt: skip


def orphan(ctx: Context) -> None:
    """A job starts a grandchild that inherits all its file descriptors (the pipes to the
    worker included) and is SIGKILLed, job process alone, while the grandchild lives on: the
    worker must notice the death, run the job again, and go on serving."""
    ctx.start_worker()
    job = ctx.enqueue(jobs.spawn, [30.0], JobSpec(kind="orphan", duration=30.0))
    ledger = ctx.suite.ledger

    def grandchild() -> int | None:
        keys = [key for _, key, _, _ in ledger.effects({job}) if key]
        return int(keys[0].split(":")[1]) if keys else None

    ctx.wait(lambda: grandchild() is not None, "the job started its grandchild")
    runs = ctx.runs()
    try:
        ctx.kill_job_process(runs[0].pid, target="its job process, whose grandchild holds its fds")
        ctx.settle(lambda: ctx.succeeded([job]), "the job ran again and succeeded")
        after = ctx.enqueue(jobs.effect, [], JobSpec(kind="effect"))
        ctx.settle(lambda: ctx.succeeded([after]), "the worker ran the next job")
        ctx.drained()
    finally:
        pid = grandchild()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
