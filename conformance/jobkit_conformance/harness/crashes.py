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

BATCH = 50
"""Jobs per `App.enqueue_many` call."""

WINDOW = 100
"""Volume jobs sent but not yet succeeded, at most."""

VOLUME_CONCURRENCY = 4
"""Job processes per volume worker: no-op jobs wait on the broker, not on the CPU."""

VOLUME_PREFETCH = 2
"""Messages leased ahead per job process: fewer round trips per job, while few enough that the
worker extends every buffered lease in time (each extension is a call to the broker; with 10,
moto under load let leases of buffered messages lapse: duplicates without a fault)."""

MIN_RATE = 40.0
"""Jobs per second the volume scenario waits for at the least before giving up (moto's SQS
does about 120 end to end on a loaded machine)."""


def _plan(kills: int, stops: int) -> list[F]:
    """The faults in order, stops spread among the kills: kill, stop, kill, kill, ..."""
    plan = [F.KILL] * kills
    for i in range(stops):
        plan.insert(min(len(plan), 1 + i * (kills + 1) // max(1, stops)), F.STOP)
    return plan


class _Feed:
    """Sends the volume jobs in batches, keeping at most `WINDOW` of them outstanding (sent, not
    yet succeeded), and follows the progress in the ledger."""

    def __init__(self, ctx: Context, stall: float) -> None:
        self.ctx = ctx
        self.sent = 0
        self.stall = stall
        self._last = (-1, 0.0)  # (succeeded, when that count was first seen)

    def done(self) -> int:
        return self.ctx.suite.ledger.succeeded_count(jobs.noop.name)

    def pump(self, target: int, limit: int) -> bool:
        """Send up to `limit` jobs in all, window permitting; True once `target` succeeded or
        none succeeded for `stall` s (lost jobs never will). A condition for `Context.settle`."""
        count, now = self.done(), time.monotonic()
        while self.sent < limit and self.sent - count < WINDOW:
            k = min(BATCH, limit - self.sent)
            self.ctx.enqueue_many(jobs.noop, [[] for _ in range(k)], JobSpec(kind="volume"))
            self.sent += k
        if count != self._last[0]:
            self._last = (count, now)
        return count >= target or now - self._last[1] > self.stall

    def run_to(self, target: int, limit: int, patience: float) -> None:
        self._last = (-1, 0.0)
        self.ctx.settle(lambda: self.pump(target, limit), f"{target} volume jobs succeeded",
                        timeout=patience)  # fmt: skip


def volume(ctx: Context) -> None:
    """The profile's `volume_jobs` no-op jobs (5,000 by default), sent with `enqueue_many` in
    batches of 50, at most 100 outstanding (a broker's cost may grow with its backlog: moto
    scans a queue on every call), while two workers serve them; at even steps of progress one
    worker's whole process group is SIGKILLed and a fresh worker started, or a worker is
    SIGSTOPped for 1.5 leases and then continued, so its late acknowledgements race the
    redelivery.

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
    first = n - n // 10
    for _ in range(2):
        ctx.start_worker(concurrency=VOLUME_CONCURRENCY, prefetch=VOLUME_PREFETCH)
    feed = _Feed(ctx, stall=max(10.0, 5 * ctx.lease))
    plan = _plan(soak.kills, 0 if ctx.suite.in_process else soak.stops)
    patience = ctx.suite.settings.timeout + n / MIN_RATE
    for i, fault in enumerate(plan):
        feed.run_to(first * (i + 1) // (len(plan) + 1), first, patience)
        alive = [w for w in ctx.workers if w.alive()]
        if not alive:
            break
        victim = alive[0]
        ctx.fault(fault, victim)
        if fault is F.KILL:
            victim.wait(10)
            ctx.start_worker(concurrency=VOLUME_CONCURRENCY, prefetch=VOLUME_PREFETCH)
        else:
            ctx.try_wait(lambda: False, timeout=ctx.lease * 1.5)  # the stall IS the fault
            ctx.fault(F.CONT, victim)
    feed.run_to(first, first, patience)
    feed.run_to(n, n, patience)  # sent after the last fault: none of these may run twice
    if feed.done() < n:
        ctx.notes.append(f"volume: {feed.done()} of {n} jobs succeeded, then none for a while")
    ctx.drained()
    # a spurious late copy (a stalled worker's ack that did not count) shows within a lease
    ctx.try_wait(lambda: False, timeout=ctx.lease)


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

    ctx.wait(lambda: grandchild() is not None and ctx.started([job]),
             "the job started its grandchild")  # fmt: skip
    try:
        ctx.kill_job_process(ctx.runs()[0].pid,
                             target="its job process, whose grandchild holds its fds")  # fmt: skip
        ctx.settle(lambda: ctx.succeeded([job]), "the job ran again and succeeded")
        after = ctx.enqueue(jobs.effect, [], JobSpec(kind="effect"))
        ctx.settle(lambda: ctx.succeeded([after]), "the worker ran the next job")
        ctx.drained()
    finally:
        pid = grandchild()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
