"""The scenarios: each sets up its own queue and workers, injects its fault and waits (with
deadlines, never bare sleeps, except where the sleep is the fault) until the jobs settle.

A scenario only acts and records; whether the backend behaved is decided afterwards by the
checkers, from the history.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from jobkit import App, RetryPolicy
from jobkit_conformance import jobs
from jobkit_conformance.checkers.bounds import redelivery_deadline
from jobkit_conformance.history import F, JobSpec, OpType

from . import crashes, scenarios_broker, scenarios_contract, scenarios_stats
from .async_jobs import async_jobs
from .buffered_shutdown import shutdown_buffered
from .context import Context
from .dead_letter_ops import dlq_ops
from .fidelity import payload
from .migration import migration
from .poison_variants import poison_variants
from .pulse import pulse
from .settings import NotApplicable, ScenarioFailed
from .workers import POLL

Scenario = Callable[[Context], None]


def basic(ctx: Context) -> None:
    """20 jobs (half with idempotency keys where claimed) enqueued, counted on the broker, then
    served by two workers; no faults."""
    keyed = ctx.suite.backend.capabilities.idempotency_keys  # else keys are refused
    ids = [
        ctx.enqueue(jobs.effect, [f"k-{i}"] if i % 2 else [], JobSpec(kind="effect"),
                    key=f"{ctx.queue}-k-{i}" if i % 2 and keyed else None)
        for i in range(20)
    ]  # fmt: skip
    ctx.record(
        "probe",
        OpType.OK,
        F.DEPTH,
        value={"queue": ctx.queue, "depth": ctx.depth(), "expected": 20},
    )
    ctx.start_worker()
    ctx.start_worker()
    ctx.settle(lambda: ctx.succeeded(ids), "all 20 jobs succeeded")
    ctx.drained()
    # a spurious copy (e.g. delivered twice) shows within a lease; waiting for it IS the check
    ctx.try_wait(lambda: len(ctx.runs()) > len(ids), timeout=ctx.lease)


def crash(ctx: Context) -> None:
    """SIGKILL a worker (process group) while jobs run; a fresh worker must redo them.

    The fresh worker also serves a queue of its own, where a job of kind "ready" shows when it
    is polling: the recovery bound counts from then at the earliest, not from its start-up."""
    first = ctx.start_worker()
    ids = [ctx.enqueue(jobs.sleep, [1.5], JobSpec(kind="sleep", duration=1.5)) for _ in range(4)]
    ctx.wait(lambda: len(ctx.running()) >= 2, "two jobs are running")
    ctx.fault(F.KILL, first)
    first.wait(10)
    ready = f"{ctx.queue}-ready"
    ctx.start_worker(queues=[ctx.queue, ready])
    ids.append(ctx.enqueue(jobs.effect, [], JobSpec(kind="ready"), queue=ready))
    ctx.settle(lambda: ctx.succeeded(ids), "all jobs succeeded after the crash")
    ctx.drained()
    ctx.drained(ready)


def stop(ctx: Context) -> None:
    """SIGSTOP a worker past its lease: another worker must take the job over; after SIGCONT
    the stopped worker's late acknowledgement must not lose anything."""
    if ctx.suite.in_process:
        raise NotApplicable(
            "the worker shares the broker's process (not shared across processes): its lease "
            "cannot expire while the broker lives"
        )
    first = ctx.start_worker(concurrency=1)
    job = ctx.enqueue(jobs.sleep, [3 * ctx.lease], JobSpec(kind="sleep", duration=3 * ctx.lease))
    ctx.wait(lambda: ctx.started([job]), "the job started")
    # the second worker is up and polling before the first one stalls
    ctx.start_worker(concurrency=1)
    ctx.try_wait(lambda: False, timeout=min(1.0, ctx.lease / 2))
    ctx.fault(F.STOP, first)
    # resumed no sooner than the declared bound allows a takeover (RabbitMQ: 3 heartbeats)
    takeover = redelivery_deadline(ctx.redelivery_bound, POLL.total_seconds())
    ctx.try_wait(lambda: ctx.started([job], 2), timeout=max(ctx.lease * 4 + 10, takeover))
    ctx.fault(F.CONT, first)
    ctx.settle(lambda: ctx.succeeded([job]) and not ctx.running(), "the job finished")
    ctx.drained()


def long_job(ctx: Context) -> None:
    """A job running 3 leases long, with an idle second worker waiting to steal it."""
    ctx.start_worker(concurrency=1)
    seconds = 3 * ctx.lease
    job = ctx.enqueue(jobs.sleep, [seconds], JobSpec(kind="long", duration=seconds))
    ctx.wait(lambda: ctx.started([job]), "the long job started")
    ctx.start_worker(concurrency=1)
    ctx.settle(lambda: ctx.succeeded([job]), "the long job finished", timeout=seconds + 30)
    ctx.drained()


def duplicate(ctx: Context) -> None:
    """The same envelope published twice, once to the worker that ran it and once, after a
    fail-over, to a fresh worker that only the job store can tell; and a second job carrying
    the idempotency key of a completed one."""
    key = f"{ctx.queue}-key"
    first = ctx.start_worker()
    plain = ctx.publish(jobs.effect, [], JobSpec(kind="effect"))
    keyed = ctx.publish(jobs.effect, [key], JobSpec(kind="effect"), key=key)
    ctx.wait(lambda: ctx.succeeded([plain, keyed]), "the originals succeeded")
    # acknowledged means the worker recorded the success: from then on a duplicate must not run
    ctx.wait(lambda: ctx.depth() == 0, "the originals were acknowledged")
    ctx.duplicate(plain)
    ctx.drained()
    first.term()
    if first.wait(ctx.suite.settings.grace.total_seconds() + 10) is None:
        raise ScenarioFailed("the worker did not exit after SIGTERM")
    ctx.duplicate(plain)
    ctx.duplicate(keyed)
    ctx.enqueue(jobs.effect, [key], JobSpec(kind="effect", outcome="skip"), key=key)
    ctx.start_worker()
    ctx.drained()
    ctx.try_wait(lambda: False, timeout=0.5)  # let a wrongly run duplicate record its effect


def retry(ctx: Context) -> None:
    """Transient failures then success; always failing; permanent failure; then a replay.
    A pulse of undelayed jobs runs until the jobs settle (see `pulse`)."""
    ctx.start_worker()
    with pulse(ctx):
        failing = _retried_jobs(ctx)
    if failing[0] not in ctx.dead_ids():
        return  # nothing to replay; the checkers report what is missing
    # replay one: it must run again (and, failing again, return to the DLQ)
    replayed = failing[0]
    ctx.replay([replayed])
    ctx.settle(
        lambda: ctx.started([replayed], jobs.FAILING.max_attempts + 1),
        "the replayed job ran again",
    )
    ctx.settle(lambda: replayed in ctx.dead_ids(), "the replayed job is dead-lettered again")
    ctx.drained()


def _retried_jobs(ctx: Context) -> list[str]:
    """Enqueue the flaky, always failing and rejected jobs and let them settle; the ids of
    the always failing ones."""
    policy = jobs.FAILING
    bounds, longest = _backoffs(policy)
    flaky_bounds, flaky_longest = _backoffs(jobs.FLAKY)
    flaky = [
        ctx.enqueue(jobs.flaky, [2], JobSpec(kind="flaky", failures=2, backoff_max=flaky_longest))
        for _ in range(2)
    ]
    failing = [
        ctx.enqueue(jobs.always_fail, [], JobSpec(kind="always_fail", outcome="dead",
                                                  backoff_min=bounds, backoff_max=longest))
        for _ in range(2)
    ]  # fmt: skip
    flaky += [
        ctx.enqueue(jobs.flaky, [1], JobSpec(kind="flaky", failures=1, backoff_min=flaky_bounds,
                                             backoff_max=flaky_longest))
    ]  # fmt: skip
    rejected = ctx.enqueue(jobs.reject, [], JobSpec(kind="reject", outcome="dead", permanent=True))
    ctx.settle(
        lambda: ctx.succeeded(flaky) and {*failing, rejected} <= ctx.dead_ids(),
        "the flaky jobs succeeded and the failing ones are dead-lettered",
    )
    return failing


def _backoffs(policy: RetryPolicy) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The policy's lower and upper backoff bounds after each failed attempt but the last."""
    attempts = range(1, policy.max_attempts)
    return (
        tuple(policy.min_backoff(n).total_seconds() for n in attempts),
        tuple(policy.max_backoff(n).total_seconds() for n in attempts),
    )


def timeout(ctx: Context) -> None:
    """Two jobs running far past their time limit: one that stops when the worker raises in
    it, one that swallows that (only killing its process stops it)."""
    ctx.start_worker()
    seconds = 30.0
    ids = [
        ctx.enqueue(job, [seconds], JobSpec(kind=kind, outcome="dead", duration=seconds))
        for job, kind in ((jobs.limited, "limited"), (jobs.stubborn, "stubborn"))
    ]
    ctx.settle(
        lambda: set(ids) <= set(ctx.dead_ids()), "the time-limited jobs are dead-lettered",
        timeout=25,
    )  # fmt: skip
    ctx.drained()


def delay(ctx: Context) -> None:
    """Jobs due in 1.5 s, twelve due at steps of 0.25 s from 0.5 s to 3.25 s (for the
    lateness figures), and one due in more than 3 leases; with a pulse of undelayed jobs
    until they ran (see `pulse`). They are sent once the worker has run a first job: a job
    due while no worker is serving yet starts when one does, which measures the worker's
    start-up, not the backend's scheduling (measured: 3-5 s for a forking RQ worker under
    the full test run, and the due jobs then queued behind the pulse sent meanwhile)."""
    ctx.start_worker()
    ctx.serving()
    with pulse(ctx):
        _delayed_jobs(ctx)
    ctx.drained()
    ctx.try_wait(lambda: False, timeout=ctx.lease)  # a late second copy would show here


def _delayed_jobs(ctx: Context) -> None:
    now = time.time()
    ids = [
        ctx.enqueue(jobs.effect, [], JobSpec(kind="delay"), not_before=now + 1.5) for _ in range(3)
    ]
    ids += [
        ctx.enqueue(jobs.effect, [], JobSpec(kind="delay"), not_before=now + 0.5 + 0.25 * i)
        for i in range(12)
    ]
    ids.append(
        ctx.enqueue(jobs.effect, [], JobSpec(kind="long_delay"), not_before=now + 3 * ctx.lease + 1)
    )
    ctx.settle(lambda: ctx.succeeded(ids), "the delayed jobs ran", timeout=3 * ctx.lease + 30)


def priority(ctx: Context) -> None:
    """A backlog of ten jobs with priorities 0..9 in random order, then one consumer."""
    prios = list(range(10))
    random.Random(7).shuffle(prios)
    ids = [ctx.enqueue(jobs.effect, [], JobSpec(kind="priority"), priority=p) for p in prios]
    ctx.start_worker(concurrency=1)
    ctx.settle(lambda: ctx.succeeded(ids), "the prioritised jobs ran")
    ctx.drained()


def shutdown(ctx: Context) -> None:
    """SIGTERM while jobs run: they finish within the grace, the rest waits for the next worker."""
    first = ctx.start_worker()
    ids = [ctx.enqueue(jobs.sleep, [1.5], JobSpec(kind="sleep", duration=1.5)) for _ in range(4)]
    ctx.wait(lambda: len(ctx.running()) >= 2, "two jobs are running")
    ctx.fault(F.TERM, first)
    if first.wait(ctx.suite.settings.grace.total_seconds() + 10) is None:
        raise ScenarioFailed("the worker did not exit within its grace after SIGTERM")
    ctx.start_worker()
    ctx.settle(lambda: ctx.succeeded(ids), "all jobs succeeded after the restart")
    ctx.drained()


def poison(ctx: Context) -> None:
    """Undecodable bytes put on the queue with the native client, then a normal job."""
    worker = ctx.start_worker(concurrency=1)
    body = b"\xff\xfe this is not a jobkit envelope {"
    raw_id = ctx.new_id()
    ctx.record("nemesis", OpType.INVOKE, F.INJECT, job_id=raw_id)
    ctx.suite.probe.inject_raw(ctx.queue, body, id=raw_id)
    ctx.record("nemesis", OpType.OK, F.INJECT, job_id=raw_id, value={"body_hex": body.hex()})
    job = ctx.enqueue(jobs.effect, [], JobSpec(kind="effect"))
    ctx.settle(
        lambda: ctx.succeeded([job]) and raw_id in ctx.dead_ids(),
        "the next job ran and the poison is dead-lettered",
        timeout=20,
    )
    ctx.drained()
    ctx.record("probe", OpType.OK, F.WORKER, value={"name": worker.name, "alive": worker.alive()})


def broker_down(ctx: Context) -> None:
    """Enqueue against the same kind of backend whose broker cannot be reached."""
    unreachable = getattr(ctx.suite.probe, "unreachable_url", None)
    if unreachable is None:
        raise NotApplicable("the backend's probe offers no unreachable_url() to enqueue against")
    url = unreachable()
    if url is None:
        raise NotApplicable("this backend has no broker that could be unreachable")
    app = App("conformance-broker-down", backend=url)
    try:
        ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip"), app=app)
    finally:
        app.close()


def unsupported(ctx: Context) -> None:
    """Enqueue what the backend does not claim: it must raise UnsupportedFeature, send nothing."""
    caps = ctx.suite.backend.capabilities
    lease = ctx.suite.settings.lease
    ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip", feature="priority_range"),
                priority=max(caps.priorities, 10))  # fmt: skip
    if caps.priorities <= 1:
        ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip", feature="priority"),
                    priority=1)  # fmt: skip
    if caps.max_delay is not None:
        ask = caps.max_delay.total_seconds() + 60
        ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip", feature="delay_range"),
                    not_before=time.time() + ask)  # fmt: skip
        if caps.max_delay.total_seconds() == 0:
            ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip", feature="delay"),
                        not_before=time.time() + 1)  # fmt: skip
        elif caps.max_delay <= lease * 3:
            ctx.enqueue(
                jobs.effect,
                [],
                JobSpec(kind="refused", outcome="skip", feature="long_delay"),
                not_before=time.time() + caps.max_delay.total_seconds() + 1,
            )
    if not caps.time_limits:
        ctx.enqueue(jobs.limited, [1.0],
                    JobSpec(kind="refused", outcome="skip", feature="time_limit"))  # fmt: skip
    if not caps.idempotency_keys:
        ctx.enqueue(jobs.effect, [], JobSpec(kind="refused", outcome="skip",
                    feature="idempotency_key"), key=f"{ctx.queue}-refused-key")  # fmt: skip
    ctx.observe_depth()


SCENARIOS: dict[str, Scenario] = {
    "poison_variants": poison_variants,
    "shutdown_buffered": shutdown_buffered,
    "async_jobs": async_jobs,
    "dlq_ops": dlq_ops,
    "payload": payload,
    "volume": crashes.volume,
    "orphan": crashes.orphan,
    "basic": basic,
    "crash": crash,
    "stop": stop,
    "long": long_job,
    "duplicate": duplicate,
    "retry": retry,
    "timeout": timeout,
    "delay": delay,
    "priority": priority,
    "shutdown": shutdown,
    "poison": poison,
    "broker_down": broker_down,
    "unsupported": unsupported,
    "migration": migration,
}
"""Scenario name -> function, longest first (they are started in this order)."""

SCENARIOS = {
    "stats": scenarios_stats.stats,  # about 17 s, mostly waiting for its delayed jobs
    **SCENARIOS,
    "contract": scenarios_contract.contract,
    "producer_killed": scenarios_broker.producer_killed,
    "broker_restart": scenarios_broker.broker_restart,  # exclusive: run after the others
    "outage": scenarios_broker.outage,  # exclusive
}

EXCLUSIVE = frozenset({"volume"}) | scenarios_broker.EXCLUSIVE
"""Scenarios run alone, after the others: their load would distort the others' timings."""

AUX_QUEUES = ("crash-ready", "contract-b")
"""Queues (after the namespace) used besides one per scenario: checked empty, cleaned up."""
