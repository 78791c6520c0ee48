"""Migration with Celery on both brokers: jobs and dead letters arrive with their state, a
second import of the same ids sends nothing, a round trip through Celery with the migrator
SIGKILLed on each leg keeps every job once; Celery+RabbitMQ without a store is a target only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import UnsupportedFeature
from jobkit.migrate import Migration, migrate
from jobkit.spi import ExportedJob, TransportBackend, open_backend
from tests.migration import (
    QUEUE,
    check_migrated,
    migrate_killed_then_whole,
    rows,
    seed,
    snapshot_sqlite,
)
from tests.workers import jobkit_command as jobkit

SLACK = timedelta(seconds=5)


def sqlite_source(path: Path) -> TransportBackend:
    backend = open_backend(f"sqlite:///{path}")
    assert isinstance(backend, TransportBackend)
    return backend


def test_sqlite_to_celery_moves_jobs_and_dead_letters_once(any_url: str, tmp_path: Path) -> None:
    source = sqlite_source(tmp_path / "src.db")
    seeded = seed(source, ready=20, delayed=6, retried=4, dead=3)
    celery = open_backend(any_url)
    try:
        options = Migration(wait=timedelta(0), batch=7, include_dead=True)
        report = migrate(source, celery, options, source_name="s", target_name="c")
        (stats,) = celery.stats([QUEUE])
        dead = {d.id: d.reason for d in celery.dead_letters(QUEUE)}
        replayed = ExportedJob(queue=QUEUE, id=seeded.ready[0], body=b"{}")
        outcome = celery.import_jobs([replayed])  # a re-run after a kill: already there
        drain = open_backend(f"sqlite:///{tmp_path / 'drain.db'}")  # leave the broker empty
        drained = migrate(celery, drain, options, source_name="c", target_name="d")
        drain.close()
    finally:
        source.close()
        celery.close()
    assert drained.ok and drained.queues[0].moved == 33
    # out of Celery again: delays, attempts used and dead letters with their reasons intact
    check_migrated(snapshot_sqlite(str(tmp_path / "drain.db")), seeded, slack=SLACK)
    (q,) = report.queues
    assert report.ok and (q.copied, q.at_target) == (33, 33)
    assert (stats.ready, stats.delayed, stats.dead) == (20, 10, 3)
    assert dead == seeded.dead
    assert outcome.skipped == {seeded.ready[0]} and not outcome.copied
    assert snapshot_sqlite(str(tmp_path / "src.db")) == {}


def test_round_trip_through_celery_with_kills_keeps_every_job_once(
    any_url: str, tmp_path: Path
) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    source = sqlite_source(src)
    seeded = seed(source, ready=150, delayed=40, retried=20, dead=10)
    source.close()
    celery = open_backend(any_url)
    try:

        def some_at_celery() -> bool:
            (s,) = celery.stats([QUEUE])
            return s.ready + s.delayed + s.dead >= 30

        there = migrate_killed_then_whole(
            f"sqlite:///{src}", any_url, tmp_path, some_at_celery, "--include-dead"
        )
        home = migrate_killed_then_whole(any_url, f"sqlite:///{back}", tmp_path,
                                         lambda: rows(back) >= 30, "--include-dead")  # fmt: skip
        (left,) = celery.stats([QUEUE])
    finally:
        celery.close()
    assert snapshot_sqlite(str(src)) == {}
    assert (left.ready, left.in_flight, left.delayed, left.dead) == (0, 0, 0, 0)
    check_migrated(snapshot_sqlite(str(back)), seeded, slack=SLACK)
    for report in (there, home):
        (q,) = report["queues"]
        assert q["accounted"] and q["found_at_source"] == q["found_at_target"]


def test_celery_amqp_without_a_store_as_a_source_is_refused_in_one_line(
    amqp_url: str, tmp_path: Path
) -> None:
    url = amqp_url.split("?")[0] + "?store=none"
    celery = open_backend(url)
    try:
        with pytest.raises(UnsupportedFeature, match="migration target only"):
            migrate(
                celery,
                open_backend(f"sqlite:///{tmp_path / 'dst.db'}"),
                Migration(),
                source_name="c",
                target_name="s",
            )
    finally:
        celery.close()
    out = jobkit("migrate", "--from", url, "--to", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 2 and "migration target only" in out.stderr
