"""Retention in the Celery adapter's Redis store: records and done keys carry Redis TTLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from jobkit_celery import RedisJobStore, parse_url

import jobkit
from jobkit import spi
from jobkit.spi import Retention
from tests.servers.redis import RedisServer
from tests.waiting import wait_until


def succeeded(job_id: str, key: str) -> spi.JobEvent:
    return spi.JobEvent(
        job_id=job_id,
        job="tasks.work",
        kind=spi.EventKind.SUCCEEDED,
        attempt=1,
        at=datetime.now(UTC),
        key=key,
    )


def test_url_sets_both_windows_and_result_ttl_is_the_older_name_of_records_ttl() -> None:
    s = parse_url("celery+redis://127.0.0.1:6379/0?records_ttl=2d&keys_ttl=30m")
    assert s.retention == Retention(records=timedelta(days=2), keys=timedelta(minutes=30))
    assert parse_url("celery+redis://h:1/0?result_ttl=60").retention.records == timedelta(
        seconds=60
    )
    assert parse_url("celery+amqp://h//").retention == Retention()


@pytest.mark.parametrize("option", ["keys_ttl=nan", "records_ttl=0", "visibility_timeout=inf"])
def test_bad_duration_option_is_a_configuration_error(option: str) -> None:
    with pytest.raises(jobkit.ConfigurationError, match="is not a duration"):
        parse_url(f"celery+redis://127.0.0.1:6379/0?{option}")


@pytest.mark.parametrize("record", ["finish", "record"])
def test_done_key_and_record_expire_after_their_windows(
    redis_server: RedisServer, record: str
) -> None:
    url = f"{redis_server.url}/5"
    redis.Redis.from_url(url).flushdb()
    retention = Retention(records=timedelta(seconds=3), keys=timedelta(seconds=1))
    store = RedisJobStore(url, retention=retention)
    event = succeeded(f"j-{record}", f"order-{record}")
    key = spi.dedup_key(event.job_id, event.key)
    try:
        if record == "finish":
            store.finish(event)
        else:
            store.record([event])
        assert store.done([key]) == {key} and store.get(event.job_id) is not None
        wait_until(lambda: not store.done([key]), timeout=10, what="the done key expired")
        assert store.get(event.job_id) is not None  # the record outlives the key
        wait_until(lambda: store.get(event.job_id) is None, timeout=10, what="the record expired")
        assert redis.Redis.from_url(url).dbsize() == 0
    finally:
        store.close()
