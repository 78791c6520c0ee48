"""Dead-letter replays on Celery (real brokers, real worker and `jobkit dlq replay` processes):
a replayed job starts with fresh attempts, and two replays at once put each job on its queue
once."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import jobkit
from tests.apps import ledger as L
from tests.celery.conftest import QUEUE, runs
from tests.waiting import wait_until
from tests.workers import ROOT, jobkit_cli, kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow


def _stubborn_url(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "hard_limit_margin=1"


@pytest.fixture
def stubborn(any_url: str, ledger: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The stubborn app (a job only Celery's hard limit stops) and a worker serving it."""
    from tests.celery import stubborn_app

    url = _stubborn_url(any_url)
    stubborn_app.app.use(url)
    proc = start_worker(url, ledger, "-q", QUEUE, "-c", "1", app="tests.celery.stubborn_app:app")
    yield url, proc
    kill_group(proc)
    proc.wait(timeout=30)
    stubborn_app.app.close()


def test_replay_of_a_job_lost_to_hard_limits_starts_with_fresh_attempts(stubborn, ledger):
    from tests.celery import stubborn_app

    url, _ = stubborn
    handle = stubborn_app.stubborn.enqueue("lost")
    with pytest.raises(jobkit.JobFailed, match="lost"):
        handle.result(timeout=90)
    assert len(runs(ledger, "lost")) == 2  # max_attempts=2: both were hard-killed
    replay = jobkit_cli(url, "dlq", "replay", QUEUE)
    assert replay.returncode == 0, replay.stderr
    # fresh attempts: two more runs before it is dead again (not dead-lettered at once as
    # "attempt 4 of at most 2")
    wait_until(lambda: len(runs(ledger, "lost")) == 4, timeout=90, what="two more runs")
    dead = wait_until(
        lambda: stubborn_app.app.backend.dead_letters(QUEUE), timeout=60, what="dead again"
    )
    assert [d.id for d in dead] == [handle.id]
    assert "attempt 3 of at most 2" in dead[0].reason


def _replay_process(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobkit.cli.main", "--backend", url, "dlq", "replay", QUEUE],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


JOBS = 30


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown: the worker acks what it finished (a SIGKILL right after the last letter
    appeared could land before the ack of that job's message, which would then come back)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_two_replays_at_once_put_each_job_on_the_queue_once(any_url, ledger):
    L.app.use(any_url)
    try:
        keys = [f"twice-{n}" for n in range(JOBS)]
        for key in keys:
            L.permanent.enqueue(key)
        worker = start_worker(any_url, ledger, "-q", QUEUE, "-c", "2")
        try:
            wait_until(
                lambda: len(L.app.backend.dead_letters(QUEUE, limit=JOBS + 1)) == JOBS,
                timeout=120, interval=0.2, what="every job dead",
            )  # fmt: skip
            _stop(worker)
        finally:
            kill_group(worker)
        replays = [_replay_process(any_url), _replay_process(any_url)]
        outputs = [proc.communicate(timeout=120) for proc in replays]
        assert [proc.returncode for proc in replays] == [0, 0], outputs
        counted = sum(int(out.split()[1]) for out, _ in outputs)  # "replayed N dead letter(s)"
        assert counted == JOBS, outputs
        stats = L.app.backend.stats([QUEUE])[0]
        assert (stats.ready, stats.dead) == (JOBS, 0)
        with running_worker(any_url, ledger, "-q", QUEUE, "-c", "2"):
            wait_until(
                lambda: len(L.app.backend.dead_letters(QUEUE, limit=JOBS + 1)) == JOBS,
                timeout=120, interval=0.2, what="every replayed job dead again",
            )  # fmt: skip
        assert {len(runs(ledger, key)) for key in keys} == {2}  # once before, once replayed
    finally:
        L.app.close()


LETTERS = 200


def _kill_replay_below(url: str, left: int) -> None:
    """Start a replay and SIGKILL it once fewer than `left` letters are left (or it ended)."""
    replay = _replay_process(url)
    try:
        wait_until(
            lambda: L.app.backend.stats([QUEUE])[0].dead < left or replay.poll() is not None,
            timeout=60, interval=0.005, what=f"the replay below {left} letters",
        )  # fmt: skip
    finally:
        replay.kill()
        replay.wait(timeout=30)


def test_a_replay_killed_midway_loses_no_letter(any_url, ledger):
    L.app.use(any_url)
    try:
        ids = {L.permanent.enqueue(f"killed-{n}").id for n in range(LETTERS)}
        worker = start_worker(any_url, ledger, "-q", QUEUE, "-c", "2")
        try:
            wait_until(
                lambda: L.app.backend.stats([QUEUE])[0].dead == LETTERS,
                timeout=120, interval=0.2, what="every job dead",
            )  # fmt: skip
            _stop(worker)
        finally:
            kill_group(worker)
        for left in (170, 130, 90):  # SIGKILL a replay three times as it works through them
            _kill_replay_below(any_url, left)

        def replayed_all() -> bool:
            done = _replay_process(any_url)
            assert done.wait(timeout=60) == 0
            return L.app.backend.stats([QUEUE])[0].dead == 0

        # a letter the killed replay was sending is replayed once its claim lapses (15 s)
        wait_until(replayed_all, timeout=60, interval=1, what="every letter replayed")
        with running_worker(any_url, ledger, "-q", QUEUE, "-c", "2"):
            wait_until(
                lambda: {d.id for d in L.app.backend.dead_letters(QUEUE, limit=2 * LETTERS)}
                == ids,
                timeout=120, interval=0.5, what="every replayed job dead again",
            )  # fmt: skip
    finally:
        L.app.close()
