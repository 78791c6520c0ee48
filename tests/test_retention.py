"""Retention: job records and completed idempotency keys expire after their windows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobkit import ConfigurationError
from jobkit.memory import backend_from_url as memory_backend
from jobkit.spi import (
    EventKind,
    JobEvent,
    JobStore,
    ManualClock,
    MemoryJobStore,
    Retention,
    SqliteJobStore,
    dedup_key,
    parse_duration,
)
from jobkit.sqlite._url import parse_url as parse_sqlite_url
from jobkit.sqlite.store import PRUNE_BATCH

SHORT = Retention(records=timedelta(hours=2), keys=timedelta(minutes=10))


def succeeded(job_id: str, key: str | None = None) -> JobEvent:
    return JobEvent(
        job_id=job_id,
        job="tasks.work",
        kind=EventKind.SUCCEEDED,
        attempt=1,
        at=datetime(2030, 1, 1, tzinfo=UTC),
        key=key,
    )


@pytest.fixture(params=["memory", "sqlite"])
def store_and_clock(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[JobStore, ManualClock]:
    clock = ManualClock()
    if request.param == "memory":
        return MemoryJobStore(retention=SHORT, clock=clock), clock
    return SqliteJobStore(str(tmp_path / "jobs.db"), retention=SHORT, clock=clock), clock


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30", 30), ("30s", 30), ("1.5s", 1.5), ("15m", 900), ("24h", 86400), ("7d", 604800)],
)
def test_duration_syntax_is_a_number_with_an_optional_unit(raw: str, seconds: float) -> None:
    assert parse_duration(raw, what="x") == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["0", "0s", "-1", "nan", "inf", "", "5x", "1e3", "h", "99999d"])
def test_bad_duration_names_the_option_the_value_and_the_syntax(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="keys_ttl=") as info:
        parse_duration(raw, what="keys_ttl")
    assert repr(raw) in str(info.value)


def test_zero_duration_is_allowed_only_when_asked() -> None:
    assert parse_duration("0", what="--grace", allow_zero=True) == timedelta(0)


def test_completed_key_dedups_within_its_window_and_not_after(
    store_and_clock: tuple[JobStore, ManualClock],
) -> None:
    store, clock = store_and_clock
    key = dedup_key("j1", "order-7")
    store.record([succeeded("j1", "order-7")])
    clock.advance(timedelta(minutes=9, seconds=59))
    assert store.done([key]) == {key}
    clock.advance(timedelta(seconds=2))
    assert store.done([key]) == set()
    assert store.get("j1") is not None  # the record outlives the key


def test_record_disappears_after_its_window(
    store_and_clock: tuple[JobStore, ManualClock],
) -> None:
    store, clock = store_and_clock
    store.record([succeeded("j1")])
    clock.advance(timedelta(hours=1, minutes=59))
    assert store.get("j1") is not None
    clock.advance(timedelta(minutes=2))
    assert store.get("j1") is None


def test_a_second_success_restarts_the_key_window(
    store_and_clock: tuple[JobStore, ManualClock],
) -> None:
    store, clock = store_and_clock
    key = dedup_key("j2", "order-8")
    store.record([succeeded("j1", "order-8")])
    clock.advance(timedelta(minutes=11))
    store.record([succeeded("j2", "order-8")])  # ran again after the window
    clock.advance(timedelta(minutes=5))
    assert store.done([key]) == {key}


def test_sqlite_store_deletes_expired_rows_in_bounded_batches(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(str(path), retention=SHORT, clock=clock)
    many = PRUNE_BATCH + 200
    store.record([succeeded(f"j{i}", f"k{i}") for i in range(many)])
    clock.advance(timedelta(hours=3))

    def rows(table: str) -> int:
        with sqlite3.connect(path) as conn:
            return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    store.record([succeeded("fresh", "fresh")])  # one prune: at most one batch per table
    assert rows("jobkit_jobs") == many - PRUNE_BATCH + 1
    store.record([succeeded("fresh2", "fresh2")])  # the batch was full: prune again at once
    assert (rows("jobkit_jobs"), rows("jobkit_done")) == (2, 2)
    store.close()


def test_sqlite_store_prunes_at_most_once_per_interval(tmp_path: Path) -> None:
    clock = ManualClock()
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(str(path), retention=SHORT, clock=clock)
    assert SHORT.prune_every == timedelta(seconds=60)
    store.record([succeeded("old", "old")])  # the first write prunes (nothing yet)
    clock.advance(timedelta(minutes=9, seconds=30))
    store.record([succeeded("a", "a")])  # prunes (nothing expired yet)
    clock.advance(timedelta(seconds=40))  # "old" expired, but the last prune was 40 s ago
    store.record([succeeded("b", "b")])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM jobkit_done").fetchone()[0] == 3
    clock.advance(timedelta(seconds=20))
    store.record([succeeded("c", "c")])
    with sqlite3.connect(path) as conn:
        keys = {row[0] for row in conn.execute("SELECT key FROM jobkit_done")}
    assert keys == {dedup_key(k, k) for k in ("a", "b", "c")}
    store.close()


def test_retention_defaults_are_seven_days_for_records_and_a_day_for_keys() -> None:
    assert Retention() == Retention(records=timedelta(days=7), keys=timedelta(hours=24))
    assert parse_sqlite_url("sqlite:///jobs.db").retention == Retention()


def test_backend_urls_set_the_windows() -> None:
    config = parse_sqlite_url("sqlite:///jobs.db?records_ttl=2d&keys_ttl=90m")
    assert config.retention == Retention(records=timedelta(days=2), keys=timedelta(minutes=90))
    backend = memory_backend("memory://?keys_ttl=5s")
    assert isinstance(backend.store, MemoryJobStore)
    assert backend.store.retention.keys == timedelta(seconds=5)


@pytest.mark.parametrize(
    "url", ["sqlite:///jobs.db?keys_ttl=0", "sqlite:///jobs.db?records_ttl=-3d"]
)
def test_bad_window_in_a_url_is_a_configuration_error_naming_it(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"_ttl=.*is not a duration"):
        parse_sqlite_url(url)


def test_a_version_1_file_keeps_its_rows_and_they_expire_from_their_old_times(
    tmp_path: Path,
) -> None:
    from jobkit.sqlite._schema import _MIGRATIONS

    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as conn:
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO jobkit_jobs VALUES ('j1', 'tasks.work', 'succeeded', 1, '[]', 'null', "
            "'k', '2030-01-01T00:00:00+00:00')"
        )
        conn.execute("INSERT INTO jobkit_done VALUES ('k:k', 'j1', '2030-01-01T00:00:00+00:00')")
    conn.close()
    clock = ManualClock(datetime(2030, 1, 1, 0, 5, tzinfo=UTC))
    store = SqliteJobStore(str(path), retention=SHORT, clock=clock)
    assert store.done(["k:k"]) == {"k:k"} and store.get("j1") is not None
    clock.advance(timedelta(minutes=6))
    assert store.done(["k:k"]) == set() and store.get("j1") is not None
    store.close()
