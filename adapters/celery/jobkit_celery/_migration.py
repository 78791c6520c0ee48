"""Migration on Celery: `import_jobs` and `present_jobs` for `CeleryBackend` (both brokers);
export on Redis is in `_redis_export`.

An imported job is sent like an enqueued one (its remaining delay as `not_before`, its attempts
already used in the envelope), a dead letter is added to the queue's dead-letter queue with its
reason, and a marker per job id (and stay, see `jobkit.markers`) is recorded in the job store
afterwards, which is how a re-run knows it (without a store there is no durable way:
`dedup="none"`); committing an export records the jobs' departures first. Export: `_redis_export`
on Redis, `_amqp_export` on RabbitMQ (which needs the store to find its delay queues: without
one, a Celery+RabbitMQ backend is a migration target only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from jobkit import spi
from jobkit_celery._runtime import Runtime


def support(runtime: Runtime) -> spi.MigrationSupport:
    # RabbitMQ: its delay queues are found through the store (`remember_delay`)
    exports = runtime.settings.broker == "redis" or runtime.store is not None
    return spi.MigrationSupport(
        exports=exports,
        delayed_before_due=exports,
        dead_letters=True,
        dedup="marker" if runtime.store is not None else "none",
    )


def import_jobs(runtime: Runtime, jobs: Sequence[spi.ExportedJob]) -> spi.ImportOutcome:
    """Sends what is not marked yet, then marks it. Raises `BrokerUnavailable`."""
    ids = [job.id for job in jobs]
    current = spi.stays(runtime.store, ids) if runtime.store is not None else {}
    present = spi.marked_jobs(runtime.store, ids, current) if runtime.store is not None else set()
    now = runtime.clock.now()
    fresh: dict[str, spi.Envelope] = {}
    dead: list[spi.ExportedJob] = []
    for job in jobs:
        if job.id in present or job.id in fresh:
            continue
        fresh[job.id] = _due_as_exported(spi.decode(job.body), job.delay, now)
        if job.dead:
            dead.append(job)
    live = [env for job_id, env in fresh.items() if job_id not in {j.id for j in dead}]
    if live:
        runtime.send(live)
    for job in dead:
        runtime.ops.dead_letter(
            queue=job.queue,
            job_id=job.id,
            body=job.body,
            reason=job.dead_reason or "",
            deliveries=0,
        )
    if runtime.store is not None:
        runtime.store.record(
            [
                spi.marker_event(job_id, env.job, now, current[job_id])
                for job_id, env in fresh.items()
            ]
        )
    return spi.ImportOutcome(
        copied=frozenset(fresh), skipped=frozenset(job.id for job in jobs) - frozenset(fresh)
    )


def record_departures(runtime: Runtime, jobs: Sequence[spi.ExportedJob]) -> None:
    """Before an export is committed: the jobs' markers stop counting (see `jobkit.markers`)."""
    if runtime.store is not None:
        spi.record_departures(runtime.store, [job.id for job in jobs], runtime.clock.now())


def present_jobs(runtime: Runtime, ids: Sequence[str], sent: set[str]) -> set[str]:
    """Marked ids; without a store, the ids this process sent (`sent`)."""
    return _marked(runtime, ids) | (set(ids) & sent)


def _marked(runtime: Runtime, ids: Sequence[str]) -> set[str]:
    return set() if runtime.store is None else spi.marked_jobs(runtime.store, ids)


def _due_as_exported(env: spi.Envelope, delay: timedelta, now: datetime) -> spi.Envelope:
    """`env` due `delay` from `now`: its own `not_before` kept when it says the same (within a
    second, the clocks' difference), so the envelope arrives unchanged."""
    if delay <= timedelta(0):
        return (
            env
            if env.not_before is None or env.not_before <= now
            else replace(env, not_before=None)
        )
    due = now + delay
    if env.not_before is not None and abs(env.not_before - due) < timedelta(seconds=1):
        return env
    return replace(env, not_before=due)
