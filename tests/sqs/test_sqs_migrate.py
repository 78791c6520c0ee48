"""Migration into and out of SQS (moto server): what SQS can carry moves with its state, what it
cannot is left at the source and reported, never altered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobkit.migrate import Migration, migrate
from jobkit.spi import Backend, Envelope, ExportedJob, TransportBackend, open_backend
from jobkit.transport_backend import message_for
from tests.migration import (
    QUEUE,
    WORK,
    check_migrated,
    job_running_at_source,
    migrate_killed_then_whole,
    rows,
    seed,
    slow_job_done,
    snapshot_sqlite,
)
from tests.servers.moto import MotoServer
from tests.waiting import wait_until

NOW = Migration(wait=timedelta(0), batch=10)


def run(source: Backend, target: Backend, options: Migration = NOW):  # type: ignore[no-untyped-def]
    return migrate(source, target, options, source_name="a", target_name="b")


@pytest.fixture
def sqlite_source(tmp_path: Path) -> TransportBackend:
    backend = open_backend(f"sqlite:///{tmp_path / 'src.db'}")
    assert isinstance(backend, TransportBackend)
    return backend


def test_sqlite_to_sqs_and_back_keeps_delays_dead_letters_and_attempts(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    """Delayed jobs (and retries waiting out a backoff) leave SQS before they are due, through
    the delayed index, with what is left of their delay; dead letters stay dead letters."""
    seeded = seed(sqlite_source, ready=25, delayed=5, retried=3, dead=2, priorities=False)
    sqs = open_backend(moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}"))
    back = open_backend(f"sqlite:///{tmp_path / 'back.db'}")
    both = Migration(include_dead=True, wait=timedelta(0), batch=10)
    try:
        there = run(sqlite_source, sqs, both)
        assert there.ok and there.queues[0].copied == 35, there.to_dict()
        (stats,) = sqs.stats([QUEUE])
        assert (stats.ready, stats.delayed + stats.in_flight, stats.dead) == (25, 8, 2)
        again = run(back, sqs)  # nothing at `back` yet: nothing moves, nothing breaks
        assert again.queues == [] or again.queues[0].found == 0
        home = run(sqs, back, Migration(queues=(QUEUE,), include_dead=True, wait=timedelta(0)))
        (left,) = sqs.stats([QUEUE])  # the tombstoned messages SQS still holds are not counted
        assert (left.ready, left.in_flight, left.delayed, left.dead) == (0, 0, 0, 0)
    finally:
        for backend in (sqlite_source, sqs, back):
            backend.close()
    (q,) = home.queues
    assert home.ok and (q.copied, q.at_target) == (35, 35), home.to_dict()
    check_migrated(snapshot_sqlite(str(tmp_path / "back.db")), seeded, slack=timedelta(seconds=5))


def test_a_migrated_delayed_job_is_dropped_at_sqs_when_it_falls_due(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    """The real SQS message of a job exported before it was due is deleted, not delivered,
    when it surfaces (its tombstone is in the store); a job not migrated is delivered."""
    url = moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}")
    sqs = open_backend(url)
    assert isinstance(sqs, TransportBackend)
    back = open_backend(f"sqlite:///{tmp_path / 'back.db'}")
    try:
        moved, kept = (Envelope(job="record", args=(n,), queue=QUEUE) for n in (1, 2))
        sqs.transport.send([message_for(moved, moved.encode(), timedelta(seconds=30))])
        report = run(sqs, back, Migration(lease=timedelta(seconds=1), wait=timedelta(0)))
        assert report.ok and report.queues[0].copied == 1, report.to_dict()
        sqs.transport.send([message_for(kept, kept.encode(), timedelta(seconds=32))])
        got: list[str] = []
        wait_until(lambda: got.extend(receive_ids(sqs)) or kept.id in got, timeout=90, interval=0)
        got.extend(receive_ids(sqs))  # `moved` fell due before `kept`: it is gone, not late
        assert got == [kept.id]
    finally:
        sqs.close()
        back.close()
    assert set(snapshot_sqlite(str(tmp_path / "back.db"))) == {moved.id}


def receive_ids(backend: TransportBackend) -> list[str]:
    got = backend.transport.receive(
        [QUEUE], max_messages=10, wait=timedelta(seconds=1), lease=timedelta(minutes=1)
    )
    backend.transport.ack(got)
    return [d.id for d in got]


def test_priorities_sqs_lacks_stay_at_the_source_with_the_reason(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    seed(sqlite_source, ready=10, delayed=0, retried=0, dead=0)  # priorities n % 5
    sqs = open_backend(moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}"))
    try:
        report = run(sqlite_source, sqs)
    finally:
        sqs.close()
    (q,) = report.queues
    assert q.copied == 2 and sum(q.left.values()) == 8 and not report.ok
    assert all("sqs has no priorities" in reason for reason in q.left), q.left
    left = snapshot_sqlite(str(tmp_path / "src.db"))
    assert len(left) == 8 and all(job.body["priority"] for (job,) in left.values())
    sqlite_source.close()


def test_round_trip_through_sqs_with_kills_keeps_every_job_once(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    """SQLite -> SQS -> SQLite, the migrator SIGKILLed on each leg. Every job comes back once
    with its envelope. SQS counts every receive: a job the killed migrator had received on the
    way back has one attempt more (documented), never fewer."""
    seeded = seed(sqlite_source, ready=80, delayed=0, retried=0, dead=0, priorities=False)
    sqlite_source.close()
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    before = snapshot_sqlite(str(src))
    url = moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}")
    sqs = open_backend(url)
    try:

        def some_at_sqs() -> bool:
            (s,) = sqs.stats([QUEUE])
            return s.ready + s.in_flight >= 20

        there = migrate_killed_then_whole(f"sqlite:///{src}", url, tmp_path, some_at_sqs)
        home = migrate_killed_then_whole(url, f"sqlite:///{back}", tmp_path,
                                         lambda: rows(back) >= 20)  # fmt: skip
    finally:
        sqs.close()
    after = snapshot_sqlite(str(back))
    assert set(after) == set(seeded.ready) and snapshot_sqlite(str(src)) == {}
    assert all(len(copies) == 1 for copies in after.values())
    for job_id, (job,) in after.items():
        assert job.body == before[job_id][0].body and job.attempts in (0, 1)
    for report in (there, home):
        (q,) = report["queues"]
        assert q["accounted"] and q["found_at_source"] == q["found_at_target"]


def test_migration_out_of_sqs_waits_for_a_job_a_real_worker_runs(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    url = moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}")
    sqs = open_backend(url)
    assert isinstance(sqs, TransportBackend)
    seeded = seed(sqs, ready=5, delayed=0, retried=0, dead=0, priorities=False)
    back = open_backend(f"sqlite:///{tmp_path / 'back.db'}")
    try:
        with job_running_at_source(url, tmp_path, seconds=4) as ledger:
            options = Migration(queues=(QUEUE, WORK), wait=timedelta(seconds=60))
            report = run(sqs, back, options)
            assert slow_job_done(ledger)  # it ended at the source while the migration waited
    finally:
        sqs.close()
        back.close()
    mig, work = report.queues
    assert report.ok and mig.moved == 5 and work.waited_for == 1 and work.found == 0
    assert set(snapshot_sqlite(str(tmp_path / "back.db"))) == set(seeded.ready)


def test_a_receive_by_an_export_that_never_ended_is_not_counted_as_an_attempt(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> None:
    """An export that is never committed nor released (its migrator was killed) leaves SQS's
    receive count one higher; the next export takes that receive out again."""
    sqs = open_backend(moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}"))
    try:
        job = Envelope(job="record", args=(1,), queue=QUEUE, attempt=2)
        sqs.send([(job, job.encode())])
        (first,) = sqs.export_jobs([QUEUE], limit=10, lease=timedelta(seconds=1))
        again = wait_until(
            lambda: sqs.export_jobs([QUEUE], limit=10, lease=timedelta(minutes=1)),
            timeout=30,
            interval=0.5,
        )
    finally:
        sqs.close()
    (second,) = again
    assert first.id == second.id == job.id
    assert first.body == second.body == job.encode()  # attempt 2: no receive counted


def _delayed_import(job_id_seed: int) -> ExportedJob:
    env = Envelope(job="record", args=(job_id_seed,), queue=QUEUE)
    return ExportedJob(queue=QUEUE, id=env.id, body=env.encode(), delay=timedelta(minutes=10))


@pytest.fixture
def sqs_and_back(
    moto: MotoServer, prefix: str, tmp_path: Path
) -> Iterator[tuple[TransportBackend, Backend]]:
    """An SQS backend with a shared store, and an SQLite file to migrate to."""
    sqs = open_backend(moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}"))
    assert isinstance(sqs, TransportBackend)
    back = open_backend(f"sqlite:///{tmp_path / 'back.db'}")
    try:
        yield sqs, back
    finally:
        sqs.close()
        back.close()


def _index_entry_never_sent(sqs: TransportBackend, job: ExportedJob) -> None:
    """What an import killed between a job's index entry and its send leaves."""
    index = sqs.transport._index
    assert index is not None
    index.add(QUEUE, [(job.id, job.body, time.time() + 600, 0, "never-sent")], stays={job.id: 0})


def _moved_exactly(report: Any, moved: int) -> Any:
    (q,) = report.queues
    assert report.ok and q.moved == moved and q.remaining_at_source == 0, report.to_dict()
    return q


def test_a_delayed_job_an_import_killed_before_its_markers_sent_twice_is_moved_once(
    sqs_and_back: tuple[TransportBackend, Backend], tmp_path: Path
) -> None:
    """A kill between an import's send and its markers: the re-run sends the job again, so
    SQS holds two real messages of it. Moved on, it is one job at the target, and the copy SQS
    still counts is reported as stale (at most), not as a job left behind."""
    sqs, back = sqs_and_back
    job = _delayed_import(1)
    sqs.transport.import_messages([job])  # the killed run: sent, no marker
    assert sqs.import_jobs([job]).copied == {job.id}  # the re-run sends it again
    q = _moved_exactly(run(sqs, back), 2)
    (stats,) = sqs.stats([QUEUE])
    assert q.stale_at_source == 1 and (stats.delayed, stats.stale) == (1, 1)
    assert list(snapshot_sqlite(str(tmp_path / "back.db"))) == [job.id]


def test_an_index_entry_whose_message_an_import_never_sent_hides_no_job_from_the_counts(
    sqs_and_back: tuple[TransportBackend, Backend], tmp_path: Path
) -> None:
    """A kill between an import's index entry and its send: the re-run writes a second entry
    and the only message. Moved on, SQS counts nothing, and another delayed job still there is
    counted as one."""
    sqs, back = sqs_and_back
    job = _delayed_import(1)
    _index_entry_never_sent(sqs, job)
    sqs.import_jobs([job])
    _moved_exactly(run(sqs, back), 2)
    other = Envelope(job="record", args=(2,), queue=QUEUE)
    sqs.transport.send([message_for(other, other.encode(), timedelta(minutes=10))])
    (stats,) = sqs.stats([QUEUE])
    assert (stats.delayed, stats.stale) == (1, 0)  # the other job, still indexed: not stale
    assert list(snapshot_sqlite(str(tmp_path / "back.db"))) == [job.id]


def test_jobs_a_killed_migrator_holds_are_waited_for_not_taken_for_stale_copies(
    sqs_and_back: tuple[TransportBackend, Backend], tmp_path: Path
) -> None:
    """Job `a` was sent three times by an import killed twice (once before its send): after
    it moved on, SQS still counts one copy of it, and two may exist. Job `b`'s entry is held by
    the export lease of a migrator killed since. The next migration waits for the lease to
    end and moves `b`: it is not taken for one of `a`'s copies."""
    sqs, back = sqs_and_back
    a, b = _delayed_import(1), _delayed_import(2)
    sqs.transport.import_messages([a])  # killed after its send
    _index_entry_never_sent(sqs, a)
    sqs.import_jobs([a])
    assert run(sqs, back).ok
    sqs.import_jobs([b])
    (held,) = sqs.export_jobs([QUEUE], limit=10, lease=timedelta(seconds=3))  # then killed
    assert held.id == b.id
    (stats,) = sqs.stats([QUEUE])
    assert (stats.delayed, stats.stale) == (2, 1)  # `b`, and one copy of `a`
    q = _moved_exactly(run(sqs, back, Migration(wait=timedelta(seconds=30), batch=10)), 1)
    assert q.stale_at_source == 1
    assert set(snapshot_sqlite(str(tmp_path / "back.db"))) == {a.id, b.id}
