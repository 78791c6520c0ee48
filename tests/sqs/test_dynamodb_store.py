"""DynamoJobStore on moto's DynamoDB (server mode, the same moto that serves SQS).

The store contract that the SQLite and memory stores are held to (records, results, completed
keys, retention windows) runs here against DynamoDB too, by importing those tests with fixtures
that give a DynamoDB store; then what is DynamoDB's own: conditional writes under concurrent
writers, the table made with TTL, URLs and errors.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta

import boto3
import pytest
from jobkit_sqs import open_store
from jobkit_sqs.dynamodb import DynamoConfig, DynamoJobStore, parse_dynamodb_url

from jobkit import ConfigurationError
from jobkit.spi import EventKind, JobStore, ManualClock, Retention, dedup_key
from tests.servers.moto import MotoServer

# The contract tests of the other stores, collected here with the fixtures below.
from tests.test_retention import (  # noqa: F401
    test_a_second_success_restarts_the_key_window,
    test_completed_key_dedups_within_its_window_and_not_after,
    test_record_disappears_after_its_window,
)
from tests.test_sqlite_store import (  # noqa: F401
    event,
    test_empty_calls_are_harmless,
    test_events_of_separate_calls_fold_together,
    test_failures_accumulate_errors_in_order,
    test_job_without_key_is_done_under_its_id,
    test_late_duplicate_does_not_undo_success,
    test_started_event_makes_job_running,
    test_success_keeps_the_result_and_marks_the_key_done,
    test_unknown_job_has_no_record,
    test_unserializable_result_fails_the_whole_batch,
)

SHORT = Retention(records=timedelta(hours=2), keys=timedelta(minutes=10))


def _config(moto: MotoServer, table: str | None = None, **options: object) -> DynamoConfig:
    return DynamoConfig(
        table=table or f"jk-{uuid.uuid4().hex[:10]}",
        region="us-east-1",
        endpoint_url=moto.endpoint,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def store(moto: MotoServer) -> Iterator[DynamoJobStore]:
    store = DynamoJobStore(_config(moto))
    yield store
    store.close()


@pytest.fixture
def store_and_clock(moto: MotoServer) -> Iterator[tuple[JobStore, ManualClock]]:
    clock = ManualClock()
    store = DynamoJobStore(_config(moto), retention=SHORT, clock=clock)
    yield store, clock
    store.close()


def test_batch_of_more_jobs_than_one_read_is_recorded(store: DynamoJobStore) -> None:
    # the SQLite store's 1,200 would take minutes on moto; 120 covers the same paths (reads of
    # 100 keys, parallel writes)
    store.record([event(EventKind.SUCCEEDED, job_id=f"j{i}") for i in range(120)])
    assert store.done([f"id:j{i}" for i in range(120)]) == {f"id:j{i}" for i in range(120)}


def test_concurrent_writers_of_one_job_lose_no_event(moto: MotoServer) -> None:
    config = _config(moto)
    stores = [DynamoJobStore(config) for _ in range(4)]

    raised: list[BaseException] = []

    def fail(n: int) -> None:
        try:
            for i in range(10):
                stores[n].record(
                    [event(EventKind.FAILED, attempt=n * 10 + i + 1, error=f"e{n}-{i}")]
                )
        except BaseException as exc:  # a writer that gave up: reported below, not lost
            raised.append(exc)

    threads = [threading.Thread(target=fail, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert raised == []
    record = stores[0].get("j1")
    assert record is not None
    errors = sorted(e.error for e in record.errors)
    assert errors == sorted(f"e{n}-{i}" for n in range(4) for i in range(10))
    assert record.attempts == 40


def test_the_store_makes_its_table_with_ttl_on_expires(moto: MotoServer) -> None:
    config = _config(moto)
    store = DynamoJobStore(config)
    store.record([event(EventKind.SUCCEEDED)])
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto.endpoint)
    ttl = client.describe_time_to_live(TableName=config.table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires")
    item = client.get_item(TableName=config.table, Key={"pk": {"S": "done#id:j1"}})["Item"]
    written = float(item["written"]["N"])
    assert written + 86_400 <= float(item["expires"]["N"]) <= written + 86_402


def test_connect_makes_the_table_before_any_record(moto: MotoServer) -> None:
    config = _config(moto)
    DynamoJobStore(config).connect()  # what a worker does before it leases anything
    client = boto3.client("dynamodb", region_name="us-east-1", endpoint_url=moto.endpoint)
    assert client.describe_table(TableName=config.table)["Table"]["ItemCount"] == 0


def test_connect_names_a_missing_table_with_create_false(moto: MotoServer) -> None:
    with pytest.raises(ConfigurationError, match=r"does not exist and create=false"):
        DynamoJobStore(_config(moto, create=False)).connect()


def test_a_missing_table_with_create_false_is_a_configuration_error(moto: MotoServer) -> None:
    store = DynamoJobStore(_config(moto, create=False))
    with pytest.raises(ConfigurationError, match=r"does not exist and create=false"):
        store.get("j1")


def test_a_later_success_keeps_its_window_against_an_earlier_write(moto: MotoServer) -> None:
    clock = ManualClock()
    config = _config(moto)
    late = DynamoJobStore(config, retention=SHORT, clock=clock)
    early_clock = ManualClock(clock.now() - timedelta(minutes=9))
    early = DynamoJobStore(config, retention=SHORT, clock=early_clock)
    late.record([event(EventKind.SUCCEEDED, key="k")])
    early.record([event(EventKind.SUCCEEDED, job_id="j2", key="k")])  # its clock is behind
    clock.advance(timedelta(minutes=5))
    assert late.done([dedup_key("j1", "k")]) == {"k:k"}  # not shortened by the early write


def test_sqs_url_store_inherits_region_and_endpoint(moto: MotoServer) -> None:
    url = moto.url(store="dynamodb://jk-inherit")
    store, shared = open_store("dynamodb://jk-inherit", url, retention=SHORT)
    assert shared and isinstance(store, DynamoJobStore)
    assert (store.config.region, store.config.endpoint_url) == ("us-east-1", moto.endpoint)
    assert store.retention == SHORT
    store.record([event(EventKind.SUCCEEDED)])
    assert store.done(["id:j1"]) == {"id:j1"}


def test_store_url_options_override_the_sqs_url() -> None:
    config = parse_dynamodb_url(
        "dynamodb://jobs?region=eu-west-1", defaults={"region": "us-east-1", "profile": "p"}
    )
    assert (config.table, config.region, config.profile) == ("jobs", "eu-west-1", "p")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("dynamodb://key:s3cret@jobs", r"carries credentials.*AWS chain"),
        ("dynamodb://x", r"table name 'x' is not allowed"),
        ("dynamodb://jobs?create=maybe", r"create='maybe' is not true or false"),
        ("dynamodb://jobs?colour=red", r"unknown option\(s\) colour"),
    ],
)
def test_bad_store_url_is_refused_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_dynamodb_url(url)
    assert "s3cret" not in str(info.value)
