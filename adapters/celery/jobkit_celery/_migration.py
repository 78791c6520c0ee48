"""Migration into Celery: `import_jobs` and `present_jobs` for `CeleryBackend`.

Celery cannot hand out its waiting messages under a lease without a worker, so a Celery backend
is a migration target only (`MigrationSupport.exports` is False). An imported job is sent like
an enqueued one (its remaining delay as `not_before`, its attempts already used in the
envelope), and a marker per job id is recorded in the job store afterwards, which is how a
re-run knows it (without a store there is no durable way: `dedup="none"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import jobkit
from jobkit import spi
from jobkit_celery._runtime import Runtime


def support(runtime: Runtime) -> spi.MigrationSupport:
    return spi.MigrationSupport(
        exports=False,
        delayed_before_due=False,
        dead_letters=False,
        dedup="marker" if runtime.store is not None else "none",
    )


def import_jobs(runtime: Runtime, jobs: Sequence[spi.ExportedJob]) -> spi.ImportOutcome:
    """Live jobs only; a dead letter raises `UnsupportedFeature` (nothing is sent then)."""
    dead = [job.id for job in jobs if job.dead]
    if dead:
        raise jobkit.UnsupportedFeature(
            asked=f"import {len(dead)} dead letter(s) into Celery",
            supported="jobkit-celery takes live jobs only in a migration",
            change="Migrate without --include-dead, or replay the dead letters first",
        )
    present = _marked(runtime, [job.id for job in jobs])
    now = runtime.clock.now()
    fresh: dict[str, spi.Envelope] = {}
    for job in jobs:
        if job.id in present or job.id in fresh:
            continue
        env = spi.decode(job.body)
        fresh[job.id] = replace(env, not_before=now + job.delay if job.delay else None)
    if fresh:
        runtime.send(list(fresh.values()))
    if runtime.store is not None:
        runtime.store.record(
            [spi.marker_event(job_id, env.job, now) for job_id, env in fresh.items()]
        )
    return spi.ImportOutcome(
        copied=frozenset(fresh), skipped=frozenset(job.id for job in jobs) - frozenset(fresh)
    )


def present_jobs(runtime: Runtime, ids: Sequence[str], sent: set[str]) -> set[str]:
    """Marked ids; without a store, the ids this process sent (`sent`)."""
    return _marked(runtime, ids) | (set(ids) & sent)


def _marked(runtime: Runtime, ids: Sequence[str]) -> set[str]:
    return set() if runtime.store is None else spi.marked_jobs(runtime.store, ids)
