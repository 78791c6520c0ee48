"""`DynamoJobStore`: job records, results and completed idempotency keys in one DynamoDB table,
shared by every worker on every machine.

    sqs://?region=eu-west-1&store=dynamodb://jobkit-jobs
    dynamodb://TABLE?region=eu-west-1&endpoint_url=http://127.0.0.1:5000&create=true

Inside an ``sqs://`` URL the store takes the SQS URL's `region`, `endpoint_url` and `profile`
unless it names its own (percent-encode a store URL that has options of its own:
``store=dynamodb%3A%2F%2Fjobs%3Fregion%3Deu-west-1``). Credentials come from the AWS chain only;
a URL carrying a user or password is refused, and errors show URLs only through `redact_url`.

The table has one string partition key, ``pk``, and two kinds of item:

* ``job#<id>``: the job's record (job, state, attempts, errors and result as JSON, key,
  updated_at) with a version ``ver``;
* ``done#<dedup key>``: a completed key (job_id, at).

Both carry ``written`` (Unix seconds of the write) and ``expires`` (``written`` plus the
retention window), the table's TTL attribute: DynamoDB deletes expired items by itself, within
a few days, so reads also ignore an item written longer ago than its window.

Conditional writes: a record is written only if its version is still the one read; otherwise it
is read again and its events applied again, so two workers recording one job never lose an event.
A completed key is written only if no later success holds it (``written`` not after this
write's), so its window only grows. Each record and key is its own conditional PutItem (a large
batch is written by a few threads at once); the keys are written after the records, so a key
is done only once its job's record says it succeeded. A batch is not atomic: an error raises,
with part of it written (recording it again is harmless: `apply_event` folds repeats).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from jobkit import (
    AttemptError,
    BrokerUnavailable,
    ConfigurationError,
    JobRecord,
    JobState,
    SerializationError,
)
from jobkit.spi import (
    Clock,
    EventKind,
    JobEvent,
    JobStore,
    Retention,
    SystemClock,
    apply_event,
    dedup_key,
    redact_url,
)
from jobkit_sqs.client import error_code, translated

_PARALLEL_FROM = 8  # writes in one record call from which they run in parallel
_WRITERS = 8
_BATCH_GET = 100  # keys per BatchGetItem, DynamoDB's limit
_MAX_CONFLICTS = 20  # re-reads of a record whose version moved before giving up
_CONFLICT_BACKOFF = 0.01  # seconds: the first wait after a conflict, doubling up to...
_CONFLICT_BACKOFF_MAX = 0.5  # ...this; each wait is drawn uniformly below it (full jitter)
_TTL_ATTRIBUTE = "expires"


@dataclass(frozen=True, kw_only=True)
class DynamoConfig:
    """One configured DynamoDB store. `create`: create the table (on-demand, with TTL on
    ``expires``) when it is missing."""

    table: str
    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    create: bool = True
    connect_timeout: float = 5.0
    max_retries: int = 3


def parse_dynamodb_url(url: str, *, defaults: dict[str, str] | None = None) -> DynamoConfig:
    """Parse a ``dynamodb://TABLE?...`` URL; `defaults` fill options it does not give (an SQS
    URL's region, endpoint_url and profile). Raises `ConfigurationError` naming the problem."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise ConfigurationError(f"{shown!r} is not a dynamodb:// URL")
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{shown!r} carries credentials; the DynamoDB store takes them only from the AWS "
            "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, profile=..., or a role)"
        )
    table = (parts.hostname or "") + parts.path.strip("/")
    if not 3 <= len(table) <= 255 or not all(c.isalnum() or c in "_-." for c in table):
        raise ConfigurationError(
            f"{shown!r}: table name {table!r} is not allowed; DynamoDB table names are 3-255 "
            "letters, digits, '_', '-' and '.'. Write dynamodb://TABLE"
        )
    options = {**(defaults or {}), **dict(parse_qsl(parts.query, keep_blank_values=True))}
    create = options.pop("create", "true").lower()
    if create not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigurationError(f"{shown!r}: create={create!r} is not true or false")
    config = DynamoConfig(
        table=table,
        region=options.pop("region", None) or None,
        endpoint_url=options.pop("endpoint_url", None) or None,
        profile=options.pop("profile", None) or None,
        create=create in ("true", "1", "yes"),
    )
    if options:
        raise ConfigurationError(
            f"{shown!r}: unknown option(s) {', '.join(sorted(options))}; known: region, "
            "endpoint_url, profile, create"
        )
    return config


class DynamoJobStore(JobStore):
    """Thread-safe (one botocore client per process, created lazily; safe across fork).

    `record` blocks for one batched read per 100 jobs and one conditional write per job and per
    completed key (more on a version conflict); `get`
    and `done` are strongly consistent reads. Raises `BrokerUnavailable` when DynamoDB cannot be
    reached, `ConfigurationError` for a missing table (with ``create=false``), credentials or
    permissions, `SerializationError` for a result that is not JSON (nothing of the batch is
    written).
    """

    def __init__(
        self,
        config: DynamoConfig,
        *,
        retention: Retention | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.retention = retention or Retention()
        self._clock: Clock = clock or SystemClock()
        self._client: Any = None
        self._pid = 0
        self._lock = threading.Lock()
        self._ready = False
        self._jitter = random.Random()

    # -- the JobStore interface ------------------------------------------------------------

    def record(self, events: Sequence[JobEvent]) -> None:
        if not events:
            return
        for event in events:
            if event.kind is EventKind.SUCCEEDED:
                _dumps(event.result, event.job, event.job_id)  # refuse before writing anything
        by_id: dict[str, list[JobEvent]] = {}
        for event in events:
            by_id.setdefault(event.job_id, []).append(event)
        now = self._now()
        current = self._batch_get([f"job#{i}" for i in by_id])
        done: dict[str, JobEvent] = {
            dedup_key(e.job_id, e.key): e for e in events if e.kind is EventKind.SUCCEEDED
        }
        writes: list[Callable[[], None]] = [
            partial(self._write_record, i, evs, current.get(f"job#{i}"), now)
            for i, evs in by_id.items()
        ]
        # the keys after the records: a key is done only once its record says so
        keys = [partial(self._write_done, k, e, now) for k, e in done.items()]
        self._run(writes)
        self._run(keys)

    def get(self, job_id: str) -> JobRecord | None:
        item = self._item(job_id)
        if item is None or _expired(item, self._now(), self.retention.records):
            return None
        return _record_of(item)

    def done(self, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        now = self._now()
        items = self._batch_get([f"done#{k}" for k in unique])
        window = self.retention.keys
        return {
            pk.removeprefix("done#")
            for pk, item in items.items()
            if not _expired(item, now, window)
        }

    def connect(self) -> None:
        """Create this process's DynamoDB client and check (or create) the table."""
        self._db()

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    # -- writing -------------------------------------------------------------------------------

    def _run(self, calls: Sequence[Callable[[], None]]) -> None:
        """Run the writes, several at a time for a large batch; raise the first error."""
        if len(calls) < _PARALLEL_FROM:
            for call in calls:
                call()
            return
        with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
            for future in [pool.submit(call) for call in calls]:
                future.result()

    def _write_record(
        self, job_id: str, events: list[JobEvent], item: dict[str, Any] | None, now: float
    ) -> None:
        """Fold `events` into the record read as `item` and write it if its version has not
        moved; else wait a jittered, growing moment, read it again and retry. (Retrying at
        once, writers in step kept losing to each other: 20 conflicts in a row for one of four
        threads writing one record, a few runs in a hundred.)"""
        for conflict in range(_MAX_CONFLICTS):
            fresh = item is not None and not _expired(item, now, self.retention.records)
            record = _record_of(item) if item is not None and fresh else None
            for event in events:
                record = apply_event(record, event)
            assert record is not None
            if self._put(self._record_item(record, item, now), "record job events"):
                return
            ceiling = min(_CONFLICT_BACKOFF_MAX, _CONFLICT_BACKOFF * 2**conflict)
            time.sleep(self._jitter.uniform(0, ceiling))
            item = self._item(job_id)
        raise BrokerUnavailable(
            f"could not record the events of job {job_id} in DynamoDB table "
            f"{self.config.table!r}: its record kept changing under {_MAX_CONFLICTS} attempts"
        )

    def _write_done(self, key: str, event: JobEvent, now: float) -> None:
        """Mark `key` done unless a later success holds it already (its window only grows)."""
        self._put(self._done_item(key, event, now), "record a completed idempotency key")

    def _put(self, put: dict[str, Any], what: str) -> bool:
        """One conditional PutItem: False when its condition failed."""
        with self._call(what):
            try:
                self._db().put_item(**put)
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    def _record_item(
        self, record: JobRecord, old: dict[str, Any] | None, now: float
    ) -> dict[str, Any]:
        version = int(old["ver"]["N"]) if old is not None else 0
        item: dict[str, Any] = {
            **_pk(f"job#{record.id}"),
            "job": {"S": record.job},
            "state": {"S": record.state.value},
            "attempts": {"N": str(record.attempts)},
            "errors": {"S": _errors_json(record)},
            "result": {"S": _dumps(record.result, record.job, record.id)},
            "ver": {"N": str(version + 1)},
            "written": {"N": repr(now)},
            _TTL_ATTRIBUTE: {"N": str(int(now + self.retention.records.total_seconds()) + 1)},
        }
        if record.idempotency_key is not None:
            item["key"] = {"S": record.idempotency_key}
        if record.updated_at is not None:
            item["updated_at"] = {"S": record.updated_at.isoformat()}
        put: dict[str, Any] = {"TableName": self.config.table, "Item": item}
        if old is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "ver = :ver"
            put["ExpressionAttributeValues"] = {":ver": {"N": str(version)}}
        return put

    def _done_item(self, key: str, event: JobEvent, now: float) -> dict[str, Any]:
        return {
            "TableName": self.config.table,
            "Item": {
                **_pk(f"done#{key}"),
                "job_id": {"S": event.job_id},
                "at": {"S": event.at.isoformat()},
                "written": {"N": repr(now)},
                _TTL_ATTRIBUTE: {"N": str(int(now + self.retention.keys.total_seconds()) + 1)},
            },
            "ConditionExpression": "attribute_not_exists(pk) OR written <= :now",
            "ExpressionAttributeValues": {":now": {"N": repr(now)}},
        }

    # -- reading -------------------------------------------------------------------------------

    def _item(self, job_id: str) -> dict[str, Any] | None:
        """The job's item (expired or not), strongly consistent."""
        with self._call("read a job record"):
            item: dict[str, Any] | None = (
                self._db()
                .get_item(
                    TableName=self.config.table, Key=_pk(f"job#{job_id}"), ConsistentRead=True
                )
                .get("Item")
            )
        return item

    def _batch_get(self, pks: list[str]) -> dict[str, dict[str, Any]]:
        """The items under `pks` that exist (expired ones included), strongly consistent."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(pks), _BATCH_GET):
            request: dict[str, Any] = {
                self.config.table: {
                    "Keys": [_pk(pk) for pk in pks[start : start + _BATCH_GET]],
                    "ConsistentRead": True,
                }
            }
            while request:
                with self._call("read job records"):
                    answer = self._db().batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.config.table, []):
                    found[item["pk"]["S"]] = item
                request = answer.get("UnprocessedKeys") or {}
        return found

    # -- the client and the table --------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _call(self, what: str) -> Any:
        return translated(what, self.config, service="DynamoDB")

    def _db(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    self._client = self._make()
                    self._pid = os.getpid()
                    self._ready = False
        if not self._ready:
            with self._lock:
                if not self._ready:
                    self._ensure_table(self._client)
                    self._ready = True
        return self._client

    def _make(self) -> Any:
        cfg = self.config
        botocfg = Config(
            connect_timeout=cfg.connect_timeout,
            read_timeout=30,
            retries={"max_attempts": cfg.max_retries + 1, "mode": "standard"},
            max_pool_connections=32,
        )
        with self._call("open a DynamoDB client"):
            session = boto3.session.Session(profile_name=cfg.profile, region_name=cfg.region)
            return session.client("dynamodb", endpoint_url=cfg.endpoint_url, config=botocfg)

    def _ensure_table(self, client: Any) -> None:
        """Check the table exists; create it (on demand, TTL on ``expires``) if allowed."""
        table = self.config.table
        with self._call(f"look up DynamoDB table {table!r}"):
            try:
                client.describe_table(TableName=table)
                return
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
        if not self.config.create:
            raise ConfigurationError(
                f"DynamoDB table {table!r} does not exist and create=false: create it with a "
                f"string partition key 'pk' and TTL on {_TTL_ATTRIBUTE!r}, or drop create=false"
            )
        with self._call(f"create DynamoDB table {table!r}"):
            try:
                client.create_table(
                    TableName=table,
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
            except ClientError as exc:
                if error_code(exc) != "ResourceInUseException":  # another process made it
                    raise
            client.get_waiter("table_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
            client.update_time_to_live(
                TableName=table,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": _TTL_ATTRIBUTE},
            )


def _pk(value: str) -> dict[str, Any]:
    return {"pk": {"S": value}}


def _expired(item: dict[str, Any], now: float, window: timedelta) -> bool:
    """Written longer than `window` before `now` (exactly: ``expires`` is rounded up for TTL)."""
    return float(item["written"]["N"]) < now - window.total_seconds()


def _dumps(value: Any, job: str, job_id: str) -> str:
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"job {job!r} ({job_id}): its result ({type(value).__name__}) is not JSON: {exc}; "
            "return ids, strings, numbers, lists or dicts"
        ) from exc


def _errors_json(record: JobRecord) -> str:
    return json.dumps(
        [{"attempt": e.attempt, "error": e.error, "at": e.at.isoformat()} for e in record.errors]
    )


def _record_of(item: dict[str, Any]) -> JobRecord:
    updated = item.get("updated_at")
    key = item.get("key")
    return JobRecord(
        id=item["pk"]["S"].removeprefix("job#"),
        job=item["job"]["S"],
        state=JobState(item["state"]["S"]),
        attempts=int(item["attempts"]["N"]),
        errors=tuple(
            AttemptError(attempt=e["attempt"], error=e["error"], at=datetime.fromisoformat(e["at"]))
            for e in json.loads(item["errors"]["S"])
        ),
        result=json.loads(item["result"]["S"]),
        idempotency_key=key["S"] if key else None,
        updated_at=datetime.fromisoformat(updated["S"]) if updated else None,
    )
