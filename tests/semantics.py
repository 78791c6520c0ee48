"""Worker-semantics scenarios run on every backend that jobkit's own worker drives (each test
module supplies the `app`, `backend` and `ledger_path` fixtures): graceful shutdown with
prefetch, jobs from newer code, broken envelopes, duplicates held by two workers."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from jobkit import App, JobFailed, JobState
from jobkit.spi import DeadLetter, Envelope, Message
from tests.apps import ledger
from tests.apps.ledger import count, rows
from tests.waiting import wait_until
from tests.workers import jobkit_cli, kill_group, running_worker, start_worker


def dead_letters(app: App, n: int) -> list[DeadLetter]:
    """The dead letters of "work" once there are `n` (the worker records DEAD before it moves
    the message, and a broker's listing may lag)."""

    def found() -> list[DeadLetter]:
        dead = app.backend.dead_letters("work")
        return dead if len(dead) == n else []

    return wait_until(found, timeout=30, what=f"{n} dead letters")


def runs_of(path: Path) -> list[tuple[str, int]]:
    return [(str(k), int(a)) for k, a in rows(path, "SELECT key, attempt FROM runs ORDER BY at")]  # type: ignore[call-overload]


def sigterm_with_prefetch_runs_every_single_attempt_job_once(
    app: App, backend: str, ledger_path: Path, *worker_args: str
) -> None:
    keys = [f"once{i}" for i in range(5)]
    handles = ledger.once.enqueue_many([(key, 2.5) for key in keys])
    args = ("-q", "work", "-c", "1", "--prefetch", "4", "--grace", "30", *worker_args)
    proc = start_worker(backend, ledger_path, *args)
    try:
        wait_until(
            lambda: count(ledger_path, "SELECT COUNT(*) FROM runs") == 1,
            timeout=60,
            what="the first job started",
        )
        proc.send_signal(signal.SIGTERM)  # mid-job: the next one could only start in ~2.5 s
        assert proc.wait(timeout=30) == 0
    finally:
        kill_group(proc)
        proc.wait(timeout=10)
    assert count(ledger_path, "SELECT COUNT(*) FROM runs") == 1  # nothing started after SIGTERM
    with running_worker(backend, ledger_path, *args):
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in handles),
            timeout=90,
            what="every job done by the next worker",
        )
    assert sorted(runs_of(ledger_path)) == [(key, 1) for key in keys]  # once each, attempt 1
    assert app.backend.dead_letters("work") == []


def wrong_typed_field_is_dead_lettered_and_its_handle_reports_dead(
    app: App, backend: str, ledger_path: Path
) -> None:
    envelope = Envelope(job="record", args=("typed",), queue="work")
    data = envelope.to_dict()
    data["time_limit"] = "30"
    app.backend.transport.send(  # type: ignore[attr-defined]
        [Message(queue="work", body=json.dumps(data).encode(), id=envelope.id)]
    )
    handle = app.handle(envelope.id)
    good = ledger.record.enqueue("after-typed")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1") as proc:
        wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
        wait_until(lambda: good.state is JobState.SUCCEEDED, timeout=60, what="the next job")
        dead = dead_letters(app, 1)  # recorded DEAD first, then moved: wait for the move
        assert proc.poll() is None
    assert [d.id for d in dead] == [envelope.id]
    assert "time_limit" in dead[0].reason
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='typed'") == 0


def unknown_job_waits_for_a_worker_that_knows_it(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    from tests.apps import newer

    handle = newer.future.enqueue("from-the-future")
    log = tmp_path / "old-worker.log"
    old = start_worker(backend, ledger_path, "-q", "work", "-c", "1", log=log)
    try:
        wait_until(
            lambda: "not defined in this app" in log.read_text(),
            timeout=60,
            what="the old worker's warning",
        )
        assert old.poll() is None
        assert app.backend.dead_letters("work") == []
        assert handle.state is not JobState.DEAD
        # Rolled out of service (a SIGKILL holding the lease would count as an attempt).
        old.send_signal(signal.SIGTERM)
        assert old.wait(timeout=60) == 0
    finally:
        kill_group(old)
        old.wait(timeout=10)
    new = start_worker(backend, ledger_path, "-q", "work", "-c", "1", app="tests.apps.newer:app")
    try:
        wait_until(
            lambda: handle.state is JobState.SUCCEEDED, timeout=90, what="the new worker ran it"
        )
    finally:
        kill_group(new)
        new.wait(timeout=10)
    assert runs_of(ledger_path) == [("from-the-future", 1)]  # the releases used no attempt


def unknown_job_is_dead_lettered_after_the_timeout(
    app: App, backend: str, ledger_path: Path
) -> None:
    from tests.apps import newer

    handle = newer.future.enqueue("nobody-knows")
    args = ("-q", "work", "-c", "1", "--unknown-job-timeout", "2")
    with running_worker(backend, ledger_path, *args):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
        dead = dead_letters(app, 1)
    assert [d.id for d in dead] == [handle.id]
    assert "not defined" in dead[0].reason and "unknown-job timeout" in dead[0].reason


def newer_envelope_version_is_released_then_dead_lettered_under_its_id(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    def send() -> str:
        envelope = Envelope(job="record", args=("v2",), queue="work")
        data = {**envelope.to_dict(), "v": 2, "something_new": [1, 2]}
        app.backend.transport.send(  # type: ignore[attr-defined]
            [Message(queue="work", body=json.dumps(data).encode(), id=envelope.id)]
        )
        return envelope.id

    newer_envelope_waits_then_is_dead(app, backend, ledger_path, tmp_path, send)


def newer_envelope_waits_then_is_dead(
    app: App, backend: str, ledger_path: Path, tmp_path: Path, send: Callable[[], str]
) -> None:
    """A worker with a 5 s unknown-job timeout warns about a newer envelope that `send` puts on
    the queue once the worker serves (it ran a job first, so the timeout does not run out while
    the worker starts), records it DEAD and dead-letters it, never running it."""
    log = tmp_path / "worker.log"
    args = ("-q", "work", "-c", "1", "--unknown-job-timeout", "5")
    proc = start_worker(backend, ledger_path, *args, log=log)
    try:
        serving = ledger.record.enqueue("serving")
        wait_until(lambda: serving.state is JobState.SUCCEEDED, timeout=60, what="a first job")
        job_id = send()
        handle = app.handle(job_id)
        wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
        dead = dead_letters(app, 1)
    finally:
        kill_group(proc)
        proc.wait(timeout=10)
    assert "newer than this jobkit reads" in log.read_text()
    assert [d.id for d in dead] == [job_id]
    assert "unknown-job timeout" in dead[0].reason
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key = 'v2'") == 0


def two_workers_holding_copies_of_a_key_run_it_once(
    app: App, backend: str, ledger_path: Path
) -> None:
    # Each worker holds a copy (the key's second copy waits behind a slow job in the other
    # worker's buffer); the copy dispatched after the first succeeded must not run.
    blockers = ledger.record.enqueue_many([("block-a", 1.5), ("block-b", 1.5)])
    copies = [ledger.record.options(idempotency_key="pay-42").enqueue("pay", 0.5) for _ in range(2)]
    args = ("-q", "work", "-c", "1", "--prefetch", "2", "--lease", "30")
    first = start_worker(backend, ledger_path, *args)
    second = start_worker(backend, ledger_path, *args)
    try:
        wait_until(
            lambda: all(h.state is JobState.SUCCEEDED for h in [*blockers, *copies]),
            timeout=90,
            what="every job settled",
        )
        wait_until(
            lambda: all(s.ready == s.in_flight == 0 for s in app.backend.stats(["work"])),
            timeout=30,
            what="the queue drained",
        )
    finally:
        for proc in (first, second):
            kill_group(proc)
            proc.wait(timeout=10)
    assert count(ledger_path, "SELECT COUNT(*) FROM runs WHERE key='pay'") == 1


def check_lists_job_names_waiting_that_the_app_does_not_define(app: App, backend: str) -> None:
    from tests.apps import newer

    ledger.record.enqueue("known")
    newer.future.enqueue_many([("f1",), ("f2",)])
    out = jobkit_cli(backend, "--app", "tests.apps.ledger:app", "check")
    assert out.returncode == 1, out.stderr
    assert f"2 message(s) waiting in work are for job {newer.future.name!r}" in out.stdout
    assert ledger.record.name not in out.stdout
    assert app.backend.dead_letters("work") == []


def body_that_is_not_json_is_recorded_dead_under_the_message_id(
    app: App, backend: str, ledger_path: Path
) -> None:
    app.backend.transport.send(  # type: ignore[attr-defined]
        [Message(queue="work", body=b"\x80 not json {", id="poison-7")]
    )
    handle = app.handle("poison-7")
    with running_worker(backend, ledger_path, "-q", "work", "-c", "1"):
        wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
        dead = dead_letters(app, 1)
    assert dead[0].body == b"\x80 not json {"
    assert "undecodable" in dead[0].reason
    with pytest.raises(JobFailed, match="undecodable"):  # result() does not wait forever
        handle.result(timeout=10)


class CommonSemantics:
    """The scenarios every backend runs; a test module subclasses it as ``Test...`` and defines
    the `backend` fixture (the `app` and `ledger_path` fixtures come from tests/conftest.py)."""

    def test_sigterm_with_prefetch_starts_nothing_new_and_uses_no_attempt(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        sigterm_with_prefetch_runs_every_single_attempt_job_once(app, backend, ledger_path)

    def test_unknown_job_is_released_uncounted_until_a_worker_that_knows_it_runs_it(
        self, app: App, backend: str, ledger_path: Path, tmp_path: Path
    ) -> None:
        unknown_job_waits_for_a_worker_that_knows_it(app, backend, ledger_path, tmp_path)

    def test_unknown_job_is_dead_lettered_after_the_unknown_job_timeout(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        unknown_job_is_dead_lettered_after_the_timeout(app, backend, ledger_path)

    def test_check_lists_job_names_waiting_that_the_app_does_not_define(
        self, app: App, backend: str
    ) -> None:
        check_lists_job_names_waiting_that_the_app_does_not_define(app, backend)


class TransportSemantics(CommonSemantics):
    """`CommonSemantics` plus the scenarios that inject raw messages through the transport of a
    backend driven by jobkit's own worker."""

    def test_wrong_typed_envelope_field_is_dead_lettered_with_a_dead_record(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        wrong_typed_field_is_dead_lettered_and_its_handle_reports_dead(app, backend, ledger_path)

    def test_body_that_is_not_json_is_recorded_dead_under_the_message_id(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        body_that_is_not_json_is_recorded_dead_under_the_message_id(app, backend, ledger_path)

    def test_newer_envelope_version_waits_then_is_dead_lettered_under_its_job_id(
        self, app: App, backend: str, ledger_path: Path, tmp_path: Path
    ) -> None:
        newer_envelope_version_is_released_then_dead_lettered_under_its_id(
            app, backend, ledger_path, tmp_path
        )
