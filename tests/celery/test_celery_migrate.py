"""Migration with Celery: into both brokers (jobs and dead letters arrive with their state, a
second import of the same ids sends nothing), out of Redis (a round trip through Celery+Redis,
the migrator SIGKILLed on each leg), and Celery+RabbitMQ as a source refused in one line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import UnsupportedFeature
from jobkit.migrate import Migration, migrate
from jobkit.spi import ExportedJob, TransportBackend, open_backend
from tests.migration import QUEUE, check_migrated, seed, snapshot_sqlite
from tests.waiting import wait_until
from tests.workers import ROOT
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
    finally:
        source.close()
        celery.close()
    (q,) = report.queues
    assert report.ok and (q.copied, q.at_target) == (33, 33)
    assert (stats.ready, stats.delayed, stats.dead) == (20, 10, 3)
    assert dead == seeded.dead
    assert outcome.skipped == {seeded.ready[0]} and not outcome.copied
    assert snapshot_sqlite(str(tmp_path / "src.db")) == {}


def rows(path: Path) -> int:
    """Rows in a jobkit SQLite file (0 before its schema exists)."""
    try:
        return sum(len(v) for v in snapshot_sqlite(str(path)).values())
    except sqlite3.OperationalError:
        return 0


def migrate_killed_then_whole(source: str, target: str, tmp_path: Path, watch: callable) -> dict:  # type: ignore[valid-type, type-arg]
    argv = [sys.executable, "-m", "jobkit.cli.main", "migrate", "--from", source, "--to", target,
            "--include-dead", "--batch", "10", "--lease", "1", "--wait", "20"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_until(lambda: watch() or proc.poll() is not None, timeout=60, interval=0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report = tmp_path / f"report-{os.getpid()}-{len(list(tmp_path.iterdir()))}.json"
    done = subprocess.run([*argv, "--json", str(report)], cwd=ROOT, env=env,
                          capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    return json.loads(report.read_text())  # type: ignore[no-any-return]


def test_round_trip_through_celery_redis_with_kills_keeps_every_job_once(
    redis_url: str, tmp_path: Path
) -> None:
    src, back = tmp_path / "src.db", tmp_path / "back.db"
    source = sqlite_source(src)
    seeded = seed(source, ready=150, delayed=40, retried=20, dead=10)
    source.close()
    celery = open_backend(redis_url)
    try:

        def some_at_celery() -> bool:
            (s,) = celery.stats([QUEUE])
            return s.ready + s.delayed + s.dead >= 30

        there = migrate_killed_then_whole(f"sqlite:///{src}", redis_url, tmp_path, some_at_celery)
        home = migrate_killed_then_whole(redis_url, f"sqlite:///{back}", tmp_path,
                                         lambda: rows(back) >= 30)  # fmt: skip
        (left,) = celery.stats([QUEUE])
    finally:
        celery.close()
    assert snapshot_sqlite(str(src)) == {}
    assert (left.ready, left.in_flight, left.delayed, left.dead) == (0, 0, 0, 0)
    check_migrated(snapshot_sqlite(str(back)), seeded, slack=SLACK)
    for report in (there, home):
        (q,) = report["queues"]
        assert q["accounted"] and q["found_at_source"] == q["found_at_target"]


def test_celery_amqp_as_a_source_is_refused_in_one_line(amqp_url: str, tmp_path: Path) -> None:
    celery = open_backend(amqp_url)
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
    out = jobkit("migrate", "--from", amqp_url, "--to", f"sqlite:///{tmp_path / 'x.db'}")
    assert out.returncode == 2 and "migration target only" in out.stderr
