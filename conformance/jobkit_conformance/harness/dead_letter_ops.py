"""The dead-letter operations scenario: list, replay (also two replays racing through two
backend instances) and purge, through the backend under test, as `jobkit dlq` does.

1. `DEAD` jobs fail permanently on their first execution (and succeed on any later one), so
   each lands in the dead-letter queue once; they are listed through the backend.
2. With no worker consuming, a third of them are replayed in one call; then, twice (a third
   by ids, then everything left), two calls, each through a backend instance of its own,
   released together, replay at the same moment. The broker must then hold one message per
   dead letter; a worker started then must run each replayed job exactly once.
3. With new dead letters waiting, and a job in flight, jobs ready and one delayed, the dead
   letters are purged: the purge must take the dead letters and nothing else.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from jobkit.spi import Backend, open_backend
from jobkit_conformance import contract_jobs, jobs
from jobkit_conformance.history import F, JobSpec, OpType

from .context import Context
from .settings import ScenarioFailed

DEAD = 12  # more than one page of 10 (SQS receives at most 10 messages a call)
PURGED = 2


def _second_backend(ctx: Context) -> tuple[Backend, bool]:
    """Another instance of the backend under test (the same one if it is not shared across
    processes: a second `memory://` would be another broker); whether it is new."""
    if not ctx.suite.backend.capabilities.shared_across_processes:
        return ctx.suite.backend, False
    return open_backend(ctx.suite.url), True


def _dead(ctx: Context, ids: list[str]) -> bool:
    return set(ids) <= ctx.dead_ids()


def list_dead(ctx: Context) -> None:
    """Record the dead letters as the backend under test lists them."""
    letters = ctx.suite.backend.dead_letters(ctx.queue, limit=1000)
    entries = [{"id": d.id, "reason": d.reason, "body_hex": d.body.hex()} for d in letters]
    ctx.record("client", OpType.OK, F.LIST, value={"queue": ctx.queue, "entries": entries})


def race_replays(ctx: Context, backends: list[Backend], ids: list[str] | None = None) -> None:
    """Replay these dead letters (all, if `ids` is None) through each of `backends` at the same
    moment."""
    barrier = threading.Barrier(len(backends))
    counts: list[Any] = [None] * len(backends)

    def replay(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            counts[index] = backends[index].replay(ctx.queue, ids=ids)
        except Exception as exc:
            counts[index] = f"{type(exc).__name__}: {exc}"

    value: dict[str, Any] = {"race": len(backends), "ids": ids}
    invoked = ctx.record("client", OpType.INVOKE, F.REPLAY, value=value)
    threads = [threading.Thread(target=replay, args=(i,)) for i in range(len(backends))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    value |= {"counts": counts, "invoked_at": invoked.time}
    ctx.record("client", OpType.OK, F.REPLAY, value=value)


def dlq_ops(ctx: Context) -> None:
    first_worker = ctx.start_worker(concurrency=1)
    dead = [
        ctx.enqueue(contract_jobs.reject_once, [], JobSpec(kind="dlq_ops.replayed"))
        for _ in range(DEAD)
    ]
    if not ctx.settle(lambda: _dead(ctx, dead), "the jobs are dead-lettered"):
        return
    # replays land on a queue nobody consumes, so the broker shows what they sent
    ctx.fault(F.TERM, first_worker)
    if first_worker.wait(ctx.suite.settings.grace.total_seconds() + 10) is None:
        raise ScenarioFailed("the idle worker did not exit after SIGTERM")
    list_dead(ctx)
    third = DEAD // 3
    ctx.replay(dead[:third])
    other, opened = _second_backend(ctx)
    try:  # two races (by ids, then everything left): two chances to catch a narrow window
        race_replays(ctx, [ctx.suite.backend, other], dead[third : 2 * third])
        race_replays(ctx, [ctx.suite.backend, other])
    finally:
        if opened:
            other.close()
    ctx.record("probe", OpType.OK, F.DEPTH, value={"queue": ctx.queue, "depth": ctx.depth(),
                                                     "replayed": len(dead)})  # fmt: skip
    ctx.start_worker(concurrency=1)
    ctx.settle(lambda: ctx.succeeded(dead), "the replayed jobs succeeded")
    # a second copy of a replayed job would start within a lease
    ctx.try_wait(lambda: False, timeout=ctx.lease)

    # purge: dead letters waiting, one job in flight, jobs ready and one delayed
    doomed = [
        ctx.enqueue(contract_jobs.reject_once, [], JobSpec(kind="dlq_ops.purged", outcome="skip"))
        for _ in range(PURGED)
    ]
    if not ctx.settle(lambda: _dead(ctx, doomed), "the jobs to purge are dead-lettered"):
        return
    seconds = 2 * ctx.lease
    busy = ctx.enqueue(jobs.sleep, [seconds], JobSpec(kind="dlq_ops.in_flight", duration=seconds))
    ctx.wait(lambda: ctx.started([busy]), "the in-flight job started")
    kept = [ctx.enqueue(jobs.effect, [], JobSpec(kind="dlq_ops.ready")) for _ in range(3)]
    due = time.time() + seconds
    kept.append(ctx.enqueue(jobs.effect, [], JobSpec(kind="dlq_ops.delayed"), not_before=due))
    ctx.record("probe", OpType.OK, F.DEPTH, value={"queue": ctx.queue, "depth": ctx.depth(),
                                                     "purge": "before"})  # fmt: skip
    invoked = ctx.record("client", OpType.INVOKE, F.PURGE, value={"queue": ctx.queue})
    with ctx.suite.lock:
        count = ctx.suite.backend.purge(ctx.queue)
    ctx.record(
        "client",
        OpType.OK,
        F.PURGE,
        value={"queue": ctx.queue, "count": count, "invoked_at": invoked.time},
    )
    ctx.record("probe", OpType.OK, F.DEPTH, value={"queue": ctx.queue, "depth": ctx.depth(),
                                                     "purge": "after"})  # fmt: skip
    ctx.observe_dead()
    ctx.settle(lambda: ctx.succeeded([busy, *kept]), "the jobs that were not dead ran")
    ctx.drained()
