"""Migration into and out of SQS (moto server): what SQS can carry moves with its state, what it
cannot is left at the source and reported, never altered."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import UnsupportedFeature
from jobkit.migrate import Migration, migrate
from jobkit.migrate._engine import HIDDEN_DELAYED
from jobkit.spi import Backend, TransportBackend, open_backend
from tests.migration import QUEUE, migrate_killed_then_whole, rows, seed, snapshot_sqlite
from tests.servers.moto import MotoServer

NOW = Migration(wait=timedelta(0), batch=10)


def run(source: Backend, target: Backend, options: Migration = NOW):  # type: ignore[no-untyped-def]
    return migrate(source, target, options, source_name="a", target_name="b")


@pytest.fixture
def sqlite_source(tmp_path: Path) -> TransportBackend:
    backend = open_backend(f"sqlite:///{tmp_path / 'src.db'}")
    assert isinstance(backend, TransportBackend)
    return backend


def test_sqlite_to_sqs_and_back_keeps_ids_bodies_and_attempts(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    seeded = seed(sqlite_source, ready=25, delayed=5, retried=0, dead=0, priorities=False)
    before = snapshot_sqlite(str(tmp_path / "src.db"))
    sqs = open_backend(moto.url(prefix=prefix, store=f"sqlite:///{tmp_path / 'sqs-jobs.db'}"))
    back = open_backend(f"sqlite:///{tmp_path / 'back.db'}")
    try:
        there = run(sqlite_source, sqs)
        assert there.ok and there.queues[0].copied == 30
        (stats,) = sqs.stats([QUEUE])
        assert (stats.ready, stats.delayed) == (25, 5)
        again = run(back, sqs)  # nothing at `back` yet: nothing moves, nothing breaks
        assert again.queues == [] or again.queues[0].found == 0
        home = run(sqs, back, Migration(queues=(QUEUE,), wait=timedelta(0), batch=10))
    finally:
        for backend in (sqlite_source, sqs, back):
            backend.close()
    (q,) = home.queues
    assert (q.copied, q.at_target) == (25, 25)
    assert q.left == {HIDDEN_DELAYED: 5} and not home.ok  # SQS shows them only when due
    after = snapshot_sqlite(str(tmp_path / "back.db"))
    assert set(after) == set(seeded.ready)
    for job_id, (job,) in after.items():
        assert job.body == before[job_id][0].body and job.attempts == 0


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


def test_dead_letters_to_sqs_are_refused_before_anything_moves(
    moto: MotoServer, prefix: str, tmp_path: Path, sqlite_source: TransportBackend
) -> None:
    seed(sqlite_source, ready=3, delayed=0, retried=0, dead=2)
    sqs = open_backend(moto.url(prefix=prefix))
    try:
        with pytest.raises(UnsupportedFeature, match="dead letters"):
            run(sqlite_source, sqs, Migration(include_dead=True, wait=timedelta(0)))
    finally:
        sqs.close()
        sqlite_source.close()
    assert len(snapshot_sqlite(str(tmp_path / "src.db"))) == 5


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
