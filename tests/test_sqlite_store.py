"""SqliteJobStore: job records and done keys, durable in the same file as the messages."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobkit import AttemptError, JobState, SerializationError
from jobkit.spi import EventKind, JobEvent, SqliteJobStore, SqliteTransport, dedup_key

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def event(
    kind: EventKind,
    *,
    job_id: str = "j1",
    attempt: int = 1,
    error: str | None = None,
    result: object = None,
    key: str | None = None,
    seconds: float = 0,
) -> JobEvent:
    return JobEvent(
        job_id=job_id,
        job="tasks.work",
        kind=kind,
        attempt=attempt,
        at=T0 + timedelta(seconds=seconds),
        error=error,
        result=result,
        key=key,
    )


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.fixture
def store(db: str) -> SqliteJobStore:
    return SqliteJobStore(db)


def test_unknown_job_has_no_record(store: SqliteJobStore) -> None:
    assert store.get("nope") is None


def test_started_event_makes_job_running(store: SqliteJobStore) -> None:
    store.record([event(EventKind.STARTED)])
    record = store.get("j1")
    assert record is not None
    assert (record.id, record.job, record.state, record.attempts) == (
        "j1",
        "tasks.work",
        JobState.RUNNING,
        1,
    )
    assert record.updated_at == T0


def test_success_keeps_the_result_and_marks_the_key_done(store: SqliteJobStore) -> None:
    store.record(
        [
            event(EventKind.STARTED, key="order-7"),
            event(EventKind.SUCCEEDED, result={"total": 3, "items": [1, "x"]}, key="order-7"),
        ]
    )
    record = store.get("j1")
    assert record is not None
    assert (record.state, record.result, record.idempotency_key) == (
        JobState.SUCCEEDED,
        {"total": 3, "items": [1, "x"]},
        "order-7",
    )
    assert store.done([dedup_key("j1", "order-7"), dedup_key("other", None)]) == {"k:order-7"}


def test_job_without_key_is_done_under_its_id(store: SqliteJobStore) -> None:
    store.record([event(EventKind.SUCCEEDED)])
    assert store.done(["id:j1"]) == {"id:j1"}


def test_failures_accumulate_errors_in_order(store: SqliteJobStore) -> None:
    store.record(
        [
            event(EventKind.FAILED, attempt=1, error="Boom: one", seconds=1),
            event(EventKind.FAILED, attempt=2, error="Boom: two", seconds=2),
            event(EventKind.DEAD, attempt=3, error="Boom: three", seconds=3),
        ]
    )
    record = store.get("j1")
    assert record is not None
    assert record.state is JobState.DEAD
    assert record.attempts == 3
    assert record.errors == (
        AttemptError(attempt=1, error="Boom: one", at=T0 + timedelta(seconds=1)),
        AttemptError(attempt=2, error="Boom: two", at=T0 + timedelta(seconds=2)),
        AttemptError(attempt=3, error="Boom: three", at=T0 + timedelta(seconds=3)),
    )
    assert store.done(["id:j1"]) == set()


def test_events_of_separate_calls_fold_together(store: SqliteJobStore) -> None:
    store.record([event(EventKind.FAILED, attempt=1, error="first")])
    store.record([event(EventKind.STARTED, attempt=2)])
    store.record([event(EventKind.SUCCEEDED, attempt=2, result=5)])
    record = store.get("j1")
    assert record is not None
    assert (record.state, record.attempts, record.result, len(record.errors)) == (
        JobState.SUCCEEDED,
        2,
        5,
        1,
    )


def test_late_duplicate_does_not_undo_success(store: SqliteJobStore) -> None:
    store.record([event(EventKind.SUCCEEDED, result="ok")])
    store.record([event(EventKind.FAILED, attempt=2, error="late")])
    record = store.get("j1")
    assert record is not None
    assert (record.state, record.result) == (JobState.SUCCEEDED, "ok")


def test_batch_of_many_jobs_is_recorded(store: SqliteJobStore) -> None:
    store.record([event(EventKind.SUCCEEDED, job_id=f"j{i}") for i in range(1200)])
    assert store.done([f"id:j{i}" for i in range(1200)]) == {f"id:j{i}" for i in range(1200)}


def test_unserializable_result_fails_the_whole_batch(store: SqliteJobStore) -> None:
    with pytest.raises(SerializationError, match="not JSON"):
        store.record(
            [
                event(EventKind.SUCCEEDED, job_id="fine", result=1),
                event(EventKind.SUCCEEDED, job_id="bad", result={1, 2}),
            ]
        )
    assert store.get("fine") is None
    assert store.done(["id:fine"]) == set()


def test_records_survive_reopening_and_share_the_transport_file(db: str) -> None:
    transport = SqliteTransport(db)
    first = SqliteJobStore(db)
    first.record([event(EventKind.SUCCEEDED, result=[1, 2])])
    first.close()
    second = SqliteJobStore(db)
    record = second.get("j1")
    assert record is not None
    assert record.result == [1, 2]
    transport.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT key, job_id FROM jobkit_done").fetchall() == [("id:j1", "j1")]


def test_store_is_safe_to_use_from_several_threads(store: SqliteJobStore) -> None:
    def work(worker: int) -> None:
        for i in range(50):
            store.record([event(EventKind.SUCCEEDED, job_id=f"w{worker}-{i}")])
            assert store.get(f"w{worker}-{i}") is not None

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    keys = [f"id:w{n}-{i}" for n in range(4) for i in range(50)]
    assert store.done(keys) == set(keys)


def test_empty_calls_are_harmless(store: SqliteJobStore) -> None:
    store.record([])
    assert store.done([]) == set()
    store.close()
    store.close()
