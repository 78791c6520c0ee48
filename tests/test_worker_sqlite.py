"""The worker against the embedded SQLite backend, with real worker processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobkit import App, JobState
from tests.apps import ledger
from tests.apps.ledger import count, rows
from tests.waiting import never, wait_until
from tests.workers import jobkit_cli, kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def test_killed_worker_loses_no_job_and_effects_happen_once_per_key(
    app: App, backend: str, ledger_path: Path
) -> None:
    handles = ledger.record.enqueue_many([(f"k{i}", 0.002) for i in range(1000)])
    assert len(handles) == 1000
    args = ("-q", "work", "-c", "2", "--prefetch", "2", "--lease", "2")
    survivor = start_worker(backend, ledger_path, *args)
    victim = start_worker(backend, ledger_path, *args)
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") >= 300,
            timeout=60,
            what="a third of the jobs done",
        )
        killed_at = time.time()
        kill_group(victim)  # SIGKILL mid-run: the supervisor and its job processes
        victim.wait(timeout=10)
        victim = start_worker(backend, ledger_path, *args)  # restarted
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") == 1000,
            timeout=120,
            what="every effect",
        )
        wait_until(
            lambda: all(s.ready == s.in_flight == 0 for s in app.backend.stats(["work"])),
            timeout=30,
            what="the queue drained and acked",
        )
    finally:
        for proc in (survivor, victim):
            kill_group(proc)
            proc.wait(timeout=10)
    assert count(ledger_path, "SELECT COUNT(DISTINCT key) FROM effects") == 1000
    # At-least-once: a job runs again only if the killed worker had it leased, or had run it
    # without recording the outcome yet (outcomes and acks are written every 20 ms).
    reruns = rows(
        ledger_path,
        "SELECT key, COUNT(*), MIN(at) FROM runs GROUP BY key HAVING COUNT(*) > 1",
    )
    assert all(n == 2 for _, n, _ in reruns)
    assert all(float(first) <= killed_at for _, _, first in reruns)  # type: ignore[arg-type]
    assert len(reruns) <= 50
    assert app.backend.stats(["work"])[0].dead == 0
    assert all(h.state is JobState.SUCCEEDED for h in handles[:20])


def test_transient_failure_uses_every_attempt_with_growing_delays_then_dead_letters(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.always_fails.enqueue("fails")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5"):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=30, what="the dead letter")
    runs = rows(ledger_path, "SELECT attempt, at FROM runs WHERE key='fails' ORDER BY at")
    assert [attempt for attempt, _ in runs] == [1, 2, 3, 4]
    times = [float(at) for _, at in runs]  # type: ignore[arg-type]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # GROWING: base 0.2 s, doubling, no jitter: waits of at least 0.2, 0.4, 0.8 s.
    assert all(g >= low for g, low in zip(gaps, (0.2, 0.4, 0.8), strict=True))
    assert gaps[0] < gaps[1] < gaps[2]
    assert handle.attempts == 4
    dead = app.backend.dead_letters("work")
    assert [d.id for d in dead] == [handle.id]
    assert "gave up after 4 of 4 attempts" in dead[0].reason


def test_dlq_replay_from_the_cli_runs_the_job_again(
    app: App, backend: str, ledger_path: Path
) -> None:
    handle = ledger.permanent.enqueue("replayed")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5"):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=30, what="the dead letter")
        listed = jobkit_cli(backend, "dlq", "list", "work", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [row["id"] for row in json.loads(listed.stdout)] == [handle.id]
        replayed = jobkit_cli(backend, "dlq", "replay", "work")
        assert replayed.returncode == 0, replayed.stderr
        assert "replayed 1" in replayed.stdout
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='replayed'") == 2,
            timeout=30,
            what="the replayed run",
        )
        wait_until(lambda: handle.state is JobState.DEAD, timeout=30, what="dead again")


def test_permanent_error_is_not_retried(app: App, backend: str, ledger_path: Path) -> None:
    handle = ledger.permanent.enqueue("once")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=30, what="the dead letter")
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='once'") == 1
    assert "permanent error" in app.backend.dead_letters("work")[0].reason


def test_job_past_its_time_limit_is_stopped_counted_and_the_worker_goes_on(
    app: App, backend: str, ledger_path: Path
) -> None:
    stuck = ledger.hang.enqueue("stuck", 60.0)
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1", "--lease", "5") as proc:
        wait_until(lambda: stuck.state is JobState.DEAD, timeout=30, what="the stuck job stopped")
        after = ledger.record.enqueue("after")
        wait_until(lambda: after.state is JobState.SUCCEEDED, timeout=30, what="the next job")
        assert proc.poll() is None
    assert stuck.attempts == 2  # max_attempts=2: both attempts ran into the limit
    assert all("TimeLimitExceeded" in e.error for e in stuck.errors)


def test_jobs_queued_behind_a_job_past_its_time_limit_run_uncounted_after_it(
    app: App, backend: str, ledger_path: Path
) -> None:
    """With --prefetch, time-limited jobs are queued in the job process behind the running one;
    when that one is stopped at its limit, the queued ones were never started: they run next,
    in their first attempt, and their own limits count from their own start."""
    stuck = ledger.hang.enqueue("stuck", 60.0)
    queued = [ledger.hang.enqueue(f"behind-{n}", 0.3) for n in range(3)]
    args = ("-q", "work", "-c", "1", "--prefetch", "4", "--lease", "5")
    with running_worker(backend, ledger_path, *args):
        wait_until(lambda: stuck.state is JobState.DEAD, timeout=30, what="the stuck job stopped")
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in queued), timeout=30,
            what="the queued jobs",
        )  # fmt: skip
    assert [h.attempts for h in queued] == [1, 1, 1]
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key LIKE 'behind-%'") == 3


def test_undecodable_message_is_dead_lettered_and_the_worker_keeps_serving(
    app: App, backend: str, ledger_path: Path
) -> None:
    from jobkit.spi import Message

    app.backend.transport.send(  # type: ignore[attr-defined]
        [Message(queue="work", body=b"\x80not json", id="poison")]
    )
    good = ledger.record.enqueue("good")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        wait_until(lambda: good.state is JobState.SUCCEEDED, timeout=30, what="the good job")
        wait_until(lambda: app.backend.dead_letters("work"), timeout=10, what="the poison")
    dead = app.backend.dead_letters("work")
    assert [d.id for d in dead] == ["poison"]
    assert dead[0].body == b"\x80not json"
    assert "undecodable" in dead[0].reason


def test_sigterm_lets_the_running_job_finish_and_releases_the_rest(
    app: App, backend: str, ledger_path: Path
) -> None:
    slow = ledger.record.enqueue("slow", 1.5)
    rest = ledger.record.enqueue_many([(f"r{i}",) for i in range(3)])
    proc = start_worker(
        backend, ledger_path, "-q", "work", "-c", "1", "--prefetch", "3", "--grace", "10"
    )
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='slow'") == 1,
            timeout=30,
            what="the slow job started",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        kill_group(proc)
    assert slow.state is JobState.SUCCEEDED
    assert count(ledger_path, "SELECT COUNT(*) FROM effects WHERE key='slow'") == 1
    stats = app.backend.stats(["work"])[0]
    not_run = [h for h in rest if h.state is not JobState.SUCCEEDED]
    assert stats.in_flight == 0
    assert stats.ready == len(not_run)  # released, not lost
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in rest),
            timeout=30,
            what="the released jobs done by the next worker",
        )


_LOCK_UNTIL_TOLD = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


def test_sigterm_reaches_job_processes_while_the_supervisor_waits_on_a_locked_database(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    """The supervisor's main thread is stuck in an SQLite call (another process holds the
    database locked) when SIGTERM comes; the job process, which runs the jobs queued in its pipe
    one after the other, must still start nothing after the job it is running."""
    ledger.once.enqueue_many([(f"held{i}", 1.0) for i in range(4)])
    args = ("-q", "work", "-c", "1", "--prefetch", "4", "--grace", "60")
    proc = start_worker(backend, ledger_path, *args)
    locker: subprocess.Popen[bytes] | None = None
    try:
        wait_until(
            lambda: app.backend.stats(["work"])[0].in_flight == 4, timeout=30,
            what="the four jobs leased",
        )  # fmt: skip
        locker = subprocess.Popen(
            [sys.executable, "-c", _LOCK_UNTIL_TOLD, str(tmp_path / "jobs.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert locker.stdout is not None and locker.stdout.readline() == b"locked\n"
        # The first job's outcome cannot be written now: the main thread waits on the lock
        # while the job process goes on with the second job, from its pipe.
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs") == 2, timeout=30,
            what="the second job started",
        )  # fmt: skip
        proc.send_signal(signal.SIGTERM)
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") == 2, timeout=30,
            what="the second job done",
        )  # fmt: skip
        assert never(lambda: count(ledger_path, "SELECT COUNT(*) FROM runs") > 2, within=1.0)
        assert locker.stdin is not None
        locker.stdin.write(b"go\n")
        locker.stdin.flush()
        assert locker.wait(timeout=30) == 0
        assert proc.wait(timeout=30) == 0
    finally:
        kill_group(proc)
        if locker is not None and locker.poll() is None:
            locker.kill()
    stats = app.backend.stats(["work"])[0]
    assert (stats.ready, stats.in_flight, stats.dead) == (2, 0, 0)  # released, none counted


def test_status_prints_depths_as_json(app: App, backend: str) -> None:
    ledger.record.enqueue_many([("a",), ("b",)])
    out = jobkit_cli(backend, "status", "--json")
    assert out.returncode == 0, out.stderr
    by_queue = {row["queue"]: row for row in json.loads(out.stdout)}
    assert by_queue["work"]["ready"] == 2


def test_cli_error_is_one_line_without_traceback(tmp_path: Path) -> None:
    out = jobkit_cli("nosuch://x", "status")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "no backend for scheme 'nosuch'" in out.stderr


def test_second_sigterm_stops_at_once_and_releases_the_running_job(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    slow = ledger.record.enqueue("slow-twice", 30.0)
    log = tmp_path / "worker.log"
    proc = start_worker(backend, ledger_path, "-q", "work", "-c", "1", "--grace", "60", log=log)
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='slow-twice'") == 1,
            timeout=30,
            what="the slow job started",
        )
        proc.send_signal(signal.SIGTERM)
        # Signals do not queue: wait until the first one was handled before sending the second.
        wait_until(
            lambda: "finishing running jobs" in log.read_text(), timeout=10, what="first signal"
        )
        assert proc.poll() is None  # still draining
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        kill_group(proc)
    stats = app.backend.stats(["work"])[0]
    assert (stats.ready, stats.in_flight, stats.dead) == (1, 0, 0)  # released, not lost
    assert slow.state is not JobState.SUCCEEDED


def test_same_envelope_delivered_twice_runs_once_with_its_key(
    app: App, backend: str, ledger_path: Path
) -> None:
    first = ledger.record.options(idempotency_key="order-7").enqueue("dup")
    again = ledger.record.options(idempotency_key="order-7").enqueue("dup")  # a retry upstream
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        wait_until(
            lambda: (
                app.backend.stats(["work"])[0].ready == 0
                and app.backend.stats(["work"])[0].in_flight == 0
            ),
            timeout=30,
            what="both deliveries handled",
        )
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='dup'") == 1
    assert first.state is JobState.SUCCEEDED and again.state is JobState.SUCCEEDED


def test_a_buffered_job_whose_lease_lapsed_is_not_started_while_another_worker_runs_it(
    app: App, backend: str, ledger_path: Path
) -> None:
    """A worker stalled (SIGSTOP) past its lease holds a job it never started; another worker
    takes it meanwhile. Resumed, the first worker must not start its stale copy."""
    ledger.record.enqueue("first", 3.0)
    ledger.record.enqueue("second", 6.0)
    runs = "SELECT COUNT(*) FROM runs WHERE key = ?"
    args = ("-q", "work", "-c", "1", "--prefetch", "1", "--lease", "2")
    with running_worker(backend, ledger_path, *args) as stalled:
        wait_until(lambda: count(ledger_path, runs, "first") == 1, timeout=30, what="first")
        wait_until(
            lambda: app.backend.stats(["work"])[0].in_flight == 2,
            timeout=30,
            what="the second job leased into the buffer",
        )
        os.kill(stalled.pid, signal.SIGSTOP)  # the supervisor only: its job process goes on
        try:
            with running_worker(backend, ledger_path, "-q", "work", "-c", "2", "--lease", "2"):
                wait_until(
                    lambda: count(ledger_path, runs, "second") == 1,
                    timeout=60,
                    what="the other worker to start the second job",
                )
                os.kill(stalled.pid, signal.SIGCONT)
                wait_until(
                    lambda: count(ledger_path, "SELECT COUNT(*) FROM effects") == 2,
                    timeout=60,
                    what="both jobs done",
                )
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
    assert count(ledger_path, runs, "second") == 1


def test_a_job_left_unstarted_when_its_lease_lapsed_comes_back_in_its_first_attempt(
    app: App, backend: str, ledger_path: Path
) -> None:
    """A worker stalled (SIGSTOP) past its lease drops the job it held unstarted; the broker
    counted that delivery, but when the job comes back to this worker it runs as attempt 1."""
    ledger.record.enqueue("first", 3.0)
    second = ledger.record.enqueue("second")
    args = ("-q", "work", "-c", "1", "--prefetch", "1", "--lease", "1")
    with running_worker(backend, ledger_path, *args) as stalled:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key = 'first'") == 1,
            timeout=30,
            what="the first job started",
        )
        wait_until(
            lambda: app.backend.stats(["work"])[0].in_flight == 2,
            timeout=30,
            what="the second job leased into the buffer",
        )
        os.kill(stalled.pid, signal.SIGSTOP)
        try:
            time.sleep(2.0)  # the stall itself (twice the lease), not a wait for a condition
        finally:
            os.kill(stalled.pid, signal.SIGCONT)
        wait_until(lambda: second.state is JobState.SUCCEEDED, timeout=30, what="the second job")
    assert rows(ledger_path, "SELECT attempt FROM runs WHERE key = 'second'") == [(1,)]
