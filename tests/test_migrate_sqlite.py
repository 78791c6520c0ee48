"""`jobkit migrate` between SQLite files: every job once with its state, also across SIGKILLs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from jobkit.migrate import Migration, migrate
from jobkit.migrate._engine import RUNNING
from jobkit.spi import TransportBackend, open_backend
from tests.migration import (
    QUEUE,
    WORK,
    Seeded,
    check_migrated,
    job_running_at_source,
    seed,
    slow_job_done,
    snapshot_sqlite,
)
from tests.waiting import wait_until
from tests.workers import ROOT
from tests.workers import jobkit_command as jobkit

SLACK = timedelta(seconds=5)


def sqlite_backend(path: Path) -> TransportBackend:
    backend = open_backend(f"sqlite:///{path}")
    assert isinstance(backend, TransportBackend)
    return backend


def seeded_source(path: Path, **counts: int) -> Seeded:
    backend = sqlite_backend(path)
    try:
        return seed(backend, **counts)
    finally:
        backend.close()


def run_migrate(src: Path, dst: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobkit.cli.main",
            "migrate",
            "--from",
            f"sqlite:///{src}",
            "--to",
            f"sqlite:///{dst}",
            *args,
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def rows(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM jobkit_messages").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_migrate_keeps_every_job_with_its_state(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded = seeded_source(src, ready=40, delayed=30, retried=20, dead=10)
    before = snapshot_sqlite(str(src))
    source, target = sqlite_backend(src), sqlite_backend(dst)
    try:
        report = migrate(
            source,
            target,
            Migration(include_dead=True, batch=17, wait=timedelta(0)),
            source_name="src",
            target_name="dst",
        )
    finally:
        source.close()
        target.close()
    after = snapshot_sqlite(str(dst))
    check_migrated(after, seeded, slack=SLACK)
    assert {i: rows[0].body for i, rows in after.items()} == {
        i: rows[0].body for i, rows in before.items()
    }
    assert snapshot_sqlite(str(src)) == {}
    (q,) = report.queues
    assert (q.found, q.copied, q.skipped, sum(q.left.values()), q.at_target) == (
        100,
        100,
        0,
        0,
        100,
    )
    assert report.ok


def test_dead_letters_stay_without_include_dead_and_a_warning_says_so(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded = seeded_source(src, ready=5, delayed=0, retried=0, dead=3)
    source, target = sqlite_backend(src), sqlite_backend(dst)
    try:
        report = migrate(
            source, target, Migration(wait=timedelta(0)), source_name="s", target_name="d"
        )
    finally:
        source.close()
        target.close()
    assert set(snapshot_sqlite(str(dst))) == set(seeded.ready)
    assert set(snapshot_sqlite(str(src))) == set(seeded.dead)
    assert report.ok and any("--include-dead" in w for w in report.warnings)


def test_job_leased_by_a_source_worker_is_left_and_reported(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded = seeded_source(src, ready=3, delayed=0, retried=0, dead=0)
    source, target = sqlite_backend(src), sqlite_backend(dst)
    try:
        (running,) = source.transport.receive(
            [QUEUE], max_messages=1, wait=timedelta(seconds=1), lease=timedelta(minutes=1)
        )
        report = migrate(
            source, target, Migration(wait=timedelta(0)), source_name="s", target_name="d"
        )
        assert set(snapshot_sqlite(str(dst))) == set(seeded.ready) - {running.id}
        assert set(snapshot_sqlite(str(src))) == {running.id}
        (q,) = report.queues
        assert q.moved == 2 and sum(q.left.values()) == 1 and "running" in next(iter(q.left))
        assert not report.ok
        source.transport.release(running)  # the worker gives it back: the next run moves it
        again = migrate(
            source, target, Migration(wait=timedelta(0)), source_name="s", target_name="d"
        )
    finally:
        source.close()
        target.close()
    assert again.ok and set(snapshot_sqlite(str(dst))) == set(seeded.ready)


def test_migration_waits_for_a_job_a_real_source_worker_runs_and_says_so(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded = seeded_source(src, ready=5, delayed=0, retried=0, dead=0)
    with job_running_at_source(f"sqlite:///{src}", tmp_path, seconds=3) as ledger:
        source, target = sqlite_backend(src), sqlite_backend(dst)
        try:
            options = Migration(queues=(QUEUE, WORK), wait=timedelta(seconds=60))
            report = migrate(source, target, options, source_name="s", target_name="d")
        finally:
            source.close()
            target.close()
        assert slow_job_done(ledger)  # it ended at the source while the migration waited
    mig, work = report.queues
    assert report.ok and mig.moved == 5 and work.waited_for == 1 and work.found == 0
    assert set(snapshot_sqlite(str(dst))) == set(seeded.ready)


def test_a_job_still_running_when_the_wait_ends_is_left_reported_and_not_lost(
    tmp_path: Path,
) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded_source(src, ready=2, delayed=0, retried=0, dead=0)
    with job_running_at_source(f"sqlite:///{src}", tmp_path, seconds=4) as ledger:
        report = tmp_path / "r.json"
        proc = run_migrate(src, dst, "-q", QUEUE, "-q", WORK, "--wait", "1", "--json", str(report))
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err.decode()
        assert "waited for 1 job(s) running on source workers" in err.decode()
        work = json.loads(report.read_text())["queues"][1]
        assert work["left_reasons"] == {RUNNING: 1} and work["remaining_at_source"] == 1
        wait_until(lambda: slow_job_done(ledger), timeout=30, interval=0.1)
    assert len(snapshot_sqlite(str(dst))) == 2 and snapshot_sqlite(str(dst), WORK) == {}


def test_dry_run_counts_and_moves_nothing(tmp_path: Path) -> None:
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded_source(src, ready=4, delayed=2, retried=1, dead=1)
    proc = run_migrate(src, dst, "--dry-run", "--include-dead", "--json", str(tmp_path / "r.json"))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["dry_run"] and report["queues"][0]["found_at_source"] == 8
    assert report["queues"][0]["copied"] == 0 and rows(dst) == 0 and rows(src) == 8


def test_sigkilled_migrations_rerun_leave_every_job_once_with_its_state(tmp_path: Path) -> None:
    """The migrator is SIGKILLed at three points (after some batches were copied), then run
    to the end: nothing lost, nothing twice, the final report exact."""
    src, dst = tmp_path / "src.db", tmp_path / "dst.db"
    seeded = seeded_source(src, ready=1500, delayed=400, retried=100, dead=100)
    args = ("--include-dead", "--batch", "25", "--lease", "1", "--wait", "20")
    for fraction in (0.1, 0.4, 0.7):
        proc = run_migrate(src, dst, *args)
        wait_until(
            lambda f=fraction, p=proc: rows(dst) >= f * 2100 or p.poll() is not None,  # type: ignore[misc]
            timeout=120,
            interval=0.005,
            what=f"{fraction:.0%} copied",
        )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc = run_migrate(src, dst, *args, "--json", str(tmp_path / "report.json"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out + err).decode()
    check_migrated(snapshot_sqlite(str(dst)), seeded, slack=SLACK)
    assert snapshot_sqlite(str(src)) == {}
    (q,) = json.loads((tmp_path / "report.json").read_text())["queues"]
    assert q["found_at_source"] == q["copied"] + q["skipped_present"] == q["found_at_target"]
    assert q["left"] == 0 and q["accounted"]
    assert b"copied" in out and b"skipped" in out


def test_the_same_file_on_both_sides_is_refused_and_nothing_moves(tmp_path: Path) -> None:
    src = tmp_path / "src.db"
    seeded_source(src, ready=3, delayed=0, retried=0, dead=0)
    other_spelling = f"sqlite:///{os.path.relpath(src, ROOT)}"
    out = jobkit("migrate", "--from", f"sqlite:///{src}", "--to", other_spelling)
    assert out.returncode == 2 and "same backend" in out.stderr
    assert rows(src) == 3


def test_a_batch_below_one_is_a_usage_error_naming_the_flag(tmp_path: Path) -> None:
    out = jobkit("migrate", "--from", "memory://", "--to", "memory://", "--batch", "0")
    assert out.returncode == 2 and "--batch" in out.stderr
