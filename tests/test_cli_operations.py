"""The operator-facing commands: --version, status --watch, --json on read commands, replay
and purge results (real `jobkit` processes on SQLite)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
from jobkit._version import __version__
from tests.apps import observed as O
from tests.operations import COMMAND
from tests.workers import ROOT, jobkit_cli, jobkit_command

APP = ["--app", "tests.apps.observed:app"]


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    backend = f"sqlite:///{tmp_path / 'jobs.db'}"
    O.app.use(backend)
    yield backend
    O.app.close()


def dead_letters(url: str, n: int) -> None:
    """`n` dead letters in queue obs, put there by a burst worker."""
    for i in range(n):
        O.hopeless.enqueue(i)
    done = jobkit_cli(url, *APP, "worker", "-q", "obs", "-c", "1", "--burst")
    assert done.returncode == 0, done.stderr


def test_version_prints_the_one_version_of_the_package():
    done = jobkit_command("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"jobkit {__version__}"
    assert jobkit.__version__ == __version__


def test_status_watch_json_prints_one_line_per_refresh_with_rates(url):
    O.ok.enqueue(1)
    O.ok.enqueue(2)
    done = jobkit_cli(url, "status", "--watch", "--json", "-q", "obs", "--count", "2",
                      "--interval", "0.2")  # fmt: skip
    assert done.returncode == 0, done.stderr
    reads = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(reads) == 2
    (queue,) = reads[1]["queues"]
    assert (queue["queue"], queue["ready"], queue["ready_per_s"]) == ("obs", 2, 0.0)


def test_status_watch_draws_a_table_with_rate_columns(url):
    O.ok.enqueue(3)
    done = jobkit_cli(url, "status", "--watch", "-q", "obs", "--count", "1")
    assert done.returncode == 0, done.stderr
    assert "ready/s" in done.stdout
    assert "obs" in done.stdout


def test_status_table_has_no_in_flight_caveat_where_stats_see_every_process(url):
    O.ok.enqueue(4)
    done = jobkit_cli(url, "status", "-q", "obs")
    assert done.returncode == 0, done.stderr
    assert "obs" in done.stdout
    assert "only what this process holds" not in " ".join(done.stdout.split())


def test_check_json_lists_no_problems_for_a_sound_app(url):
    done = jobkit_cli(url, *APP, "check", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["problems"] == []


@pytest.mark.slow
def test_replay_and_purge_report_counts_as_json(url):
    dead_letters(url, 3)
    listed = jobkit_cli(url, "dlq", "list", "obs", "--json")
    assert len(json.loads(listed.stdout)) == 3
    replayed = jobkit_cli(url, "dlq", "replay", "obs", "--json")
    assert json.loads(replayed.stdout) == {"queue": "obs", "replayed": 3}
    dead_letters(url, 0)  # the replayed jobs fail again, for good
    purged = jobkit_cli(url, "dlq", "purge", "obs", "--json")
    assert json.loads(purged.stdout) == {"queue": "obs", "purged": 3}


@pytest.mark.slow
def test_replay_on_a_terminal_shows_a_progress_display_naming_the_count(url):
    dead_letters(url, 2)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*COMMAND, "--backend", url, "dlq", "replay", "obs"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "120"},
    )
    os.close(follower)  # the child holds the terminal now; EIO on read once it has exited
    shown = b""
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # read as drawn: a full terminal never blocks it
            if not select.select([leader], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert proc.returncode == 0
    assert stdout.decode().strip() == "replayed 2 dead letter(s) to obs"
    assert b"replaying 2 dead letter(s) of obs" in shown
