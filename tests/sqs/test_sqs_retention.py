"""Retention in the SQS adapter's stores: the windows come from the sqs:// URL."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from jobkit_sqs import open_store, parse_url

import jobkit
from jobkit import spi
from jobkit.spi import Retention, SqliteJobStore


def test_url_windows_reach_the_default_memory_store() -> None:
    config = parse_url("sqs://us-east-1?records_ttl=1d&keys_ttl=2h")
    assert config.retention == Retention(records=timedelta(days=1), keys=timedelta(hours=2))
    store, shared = open_store(config.store, "sqs://", retention=config.retention)
    assert isinstance(store, spi.MemoryJobStore) and not shared
    assert store.retention == config.retention


def test_url_windows_reach_the_sqlite_store(tmp_path: Path) -> None:
    retention = Retention(keys=timedelta(minutes=5))
    store, shared = open_store(f"sqlite:///{tmp_path}/jobs.db", "sqs://", retention=retention)
    assert isinstance(store, SqliteJobStore) and shared
    assert store.retention == retention
    store.close()


def test_defaults_are_seven_days_and_a_day() -> None:
    assert parse_url("sqs://us-east-1").retention == Retention()


def test_bad_window_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(jobkit.ConfigurationError, match=r"keys_ttl='-1h' is not a duration"):
        parse_url("sqs://us-east-1?keys_ttl=-1h")
