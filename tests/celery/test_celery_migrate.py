"""Migration into Celery (Redis and RabbitMQ brokers): jobs arrive with their state, a second
import of the same ids sends nothing, and Celery as a source is refused with a clear error."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import UnsupportedFeature
from jobkit.migrate import Migration, migrate
from jobkit.spi import ExportedJob, TransportBackend, open_backend
from tests.migration import QUEUE, seed, snapshot_sqlite
from tests.workers import jobkit_command as jobkit


def test_sqlite_to_celery_moves_ready_and_delayed_jobs_once(any_url: str, tmp_path: Path) -> None:
    source = open_backend(f"sqlite:///{tmp_path / 'src.db'}")
    assert isinstance(source, TransportBackend)
    seeded = seed(source, ready=20, delayed=6, retried=4, dead=0)
    celery = open_backend(any_url)
    try:
        report = migrate(
            source, celery, Migration(wait=timedelta(0), batch=7), source_name="s", target_name="c"
        )
        (stats,) = celery.stats([QUEUE])
        replayed = ExportedJob(queue=QUEUE, id=seeded.ready[0], body=b"{}")
        outcome = celery.import_jobs([replayed])  # a re-run after a kill: already there
    finally:
        source.close()
        celery.close()
    (q,) = report.queues
    assert report.ok and (q.copied, q.at_target) == (30, 30)
    assert (stats.ready, stats.delayed) == (20, 10)
    assert outcome.skipped == {seeded.ready[0]} and not outcome.copied
    assert snapshot_sqlite(str(tmp_path / "src.db")) == {}


def test_celery_as_a_source_is_refused_in_one_line(any_url: str, tmp_path: Path) -> None:
    celery = open_backend(any_url)
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
    out = jobkit("migrate", "--from", any_url, "--to", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 2 and "migration target only" in out.stderr
