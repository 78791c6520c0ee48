"""Migration markers: how a backend without native lookups by job id (`MigrationSupport.dedup
== "marker"`) knows which jobs `jobkit migrate` has already sent to it.

A job may come to one backend more than once (moved to Redis, on to SQS, back to Redis): each
*stay* has its own marker. When a job leaves (its export is committed), a *departure* is
recorded first; the number of departures recorded for a job id is the number of its current
stay. So an import run again after a kill finds its marker (nothing is sent twice), and a job
that comes back after leaving finds none (it is sent, never skipped as "already present").

Both are `SUCCEEDED` events of pseudo job ids, looked up in batches with `JobStore.done`,
which every store implements. They are kept apart from the job's own record and keys, so a
store shared with the source (which holds the job's earlier attempts) is not mistaken for a
copy, and are kept as long as `retention.keys`.

A departure recorded and the commit then killed leaves the job at the source with no marker:
the re-run moves it again (the target skips it) and records one more departure, which costs
nothing. Never the other way round: a job gone with its marker still valid would be skipped
when it comes back, and lost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from jobkit.store import EventKind, JobEvent, JobStore, dedup_key


def migration_marker(job_id: str, stay: int = 0) -> str:
    """The pseudo job id whose completed key says `jobkit migrate` sent job `job_id` to this
    backend for its `stay`-th time (counted from 0)."""
    return f"migrated:{job_id}" if stay == 0 else f"migrated:{job_id}#{stay}"


def departure_marker(job_id: str, stay: int) -> str:
    """The pseudo job id whose completed key says job `job_id` left this backend after its
    `stay`-th stay."""
    return f"departed:{job_id}#{stay}"


def stays(store: JobStore, ids: Sequence[str]) -> dict[str, int]:
    """The current stay of each id: how many departures are recorded for it. One batched
    `done` call per stay the slowest id has had (a job seldom moves more than once)."""
    out: dict[str, int] = {}
    pending = list(dict.fromkeys(ids))
    stay = 0
    while pending:
        keys = {dedup_key(departure_marker(i, stay), None): i for i in pending}
        gone = store.done(list(keys))
        pending = [i for key, i in keys.items() if key in gone]
        out.update((i, stay) for key, i in keys.items() if key not in gone)
        stay += 1
    return out


def marked(
    store: JobStore, ids: Sequence[str], current: Mapping[str, int] | None = None
) -> set[str]:
    """The ids among `ids` with a migration marker for their current stay (`current`, from
    `stays`; looked up when not given)."""
    current = stays(store, ids) if current is None else current
    keys = {dedup_key(migration_marker(i, current[i]), None): i for i in ids}
    return {keys[k] for k in store.done(list(keys))}


def marker_event(job_id: str, job: str, at: datetime, stay: int = 0) -> JobEvent:
    """The event that records the marker of `job_id`'s `stay` (see `migration_marker`)."""
    return JobEvent(
        job_id=migration_marker(job_id, stay), job=job, kind=EventKind.SUCCEEDED, attempt=0, at=at
    )


def record_departures(store: JobStore, ids: Sequence[str], at: datetime) -> None:
    """Record that the jobs `ids` leave this backend (call before they are deleted at it):
    their markers stop counting, so a later import of the same ids sends them again."""
    if not ids:
        return
    current = stays(store, ids)
    store.record(
        [
            JobEvent(
                job_id=departure_marker(i, stay),
                job="",
                kind=EventKind.SUCCEEDED,
                attempt=0,
                at=at,
            )
            for i, stay in current.items()
        ]
    )
