"""`RedisJobStore`: job records and completed idempotency keys in Redis.

Write-optimised: every event is one RPUSH onto the job's event list (pipelined with the key's
expiry), and a record is folded from the list when read. A success also sets the dedup key.

Keys, each with a Redis TTL so Redis deletes them itself (no sweep): ``jobkit.job.<id>`` (list of
JSON events; expires `Retention.records` after its last event), ``jobkit.done.<dedup key>`` (set
when the job succeeded; expires `Retention.keys` later: the dedup window),
``jobkit.starts.<message id>`` (how often that message has started: a delivery that never
started, e.g. prefetched and given back at shutdown, uses no attempt; as records).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import redis

import jobkit
from jobkit import JobRecord, spi
from jobkit.spi import EventKind, JobEvent, Retention


def job_key(job_id: str) -> str:
    return f"jobkit.job.{job_id}"


def done_key(key: str) -> str:
    return f"jobkit.done.{key}"


def encode_event(event: JobEvent) -> str:
    return json.dumps(
        {
            "job_id": event.job_id,
            "job": event.job,
            "kind": event.kind.value,
            "attempt": event.attempt,
            "at": event.at.isoformat(),
            "error": event.error,
            "result": event.result,
            "key": event.key,
        },
        separators=(",", ":"),
    )


def fold(job_id: str, raw_events: Sequence[bytes | str]) -> JobRecord | None:
    """The record that a list of encoded events adds up to (None for no events)."""
    record: JobRecord | None = None
    for raw in raw_events:
        data: dict[str, Any] = json.loads(raw)
        event = JobEvent(
            job_id=job_id,
            job=data["job"],
            kind=EventKind(data["kind"]),
            attempt=int(data["attempt"]),
            at=datetime.fromisoformat(data["at"]),
            error=data.get("error"),
            result=data.get("result"),
            key=data.get("key"),
        )
        record = spi.apply_event(record, event)
    return record


# KEYS: job's event list, dedup key. ARGV: event, records ttl (ms), "1" to mark the key done,
# keys ttl (ms).
_FINISH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], 1, 'PX', ARGV[4]) end
return 1
"""


# KEYS: dedup key, start counter. ARGV: ttl. Returns -1 if the key is done, else the new count.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return n
"""


class RedisJobStore(spi.JobStore):
    """Thread-safe (redis-py's client is). Safe to use after fork (redis-py reconnects).

    The worker makes two calls per job: `begin` (one Lua script call) before running it and
    `finish`
    (one Lua script call: no redis-py pipeline object to build, which costs more CPU than the
    call) before the ack. It records no STARTED event: the dedup check is what correctness
    needs before a run; the STARTED write it came with cost more than the check.
    """

    def __init__(self, url: str, *, retention: Retention | None = None) -> None:
        self.url = url
        self.retention = retention or Retention()
        self.records_ms = _ms(self.retention.records)
        self.keys_ms = _ms(self.retention.keys)
        self.ttl = max(1, round(self.retention.records.total_seconds()))  # for EXPIRE, seconds
        self.client = redis.Redis.from_url(url)
        self._finish = self.client.register_script(_FINISH)
        self._begin = self.client.register_script(_BEGIN)

    def _push(self, pipe: Any, events: Sequence[JobEvent]) -> None:
        for event in events:
            key = job_key(event.job_id)
            pipe.rpush(key, encode_event(event))
            pipe.pexpire(key, self.records_ms)
            if event.kind is EventKind.SUCCEEDED:
                pipe.set(done_key(spi.dedup_key(event.job_id, event.key)), 1, px=self.keys_ms)

    def record(self, events: Sequence[JobEvent]) -> None:
        try:
            with self.client.pipeline(transaction=True) as pipe:
                self._push(pipe, events)
                pipe.execute()
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def finish(self, event: JobEvent) -> None:
        """Record the event that ends an attempt (one round trip)."""
        done = done_key(spi.dedup_key(event.job_id, event.key))
        flag = "1" if event.kind is EventKind.SUCCEEDED else "0"
        try:
            self._finish(
                keys=[job_key(event.job_id), done],
                args=[encode_event(event), self.records_ms, flag, self.keys_ms],
            )
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def begin(self, key: str, message_id: str) -> int | None:
        """About to start a job: None if its dedup `key` succeeded already (nothing written);
        else count one more start of the message `message_id` and return the count
        (1 for a first start, more when earlier starts ended without an outcome). One round trip.
        """
        try:
            starts = int(
                self._begin(
                    keys=[done_key(key), f"jobkit.starts.{message_id}"],
                    args=[self.ttl],
                )
            )
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read idempotency key: {exc}") from exc
        return None if starts < 0 else starts

    def remember_queue(self, queue: str) -> None:
        try:
            self.client.sadd("jobkit.queues", queue)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record queue {queue!r}: {exc}") from exc

    def remember_delay(self, ttl_ms: int) -> None:
        """Record that RabbitMQ delay queues with this TTL exist (`delays`), so that another
        process (`jobkit status`, `jobkit migrate`) finds their messages."""
        try:
            self.client.sadd("jobkit.delay-ttls", ttl_ms)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record delay {ttl_ms} ms: {exc}") from exc

    def delays(self) -> set[int]:
        try:
            return {int(_text(t)) for t in self.client.smembers("jobkit.delay-ttls")}
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot list delays: {exc}") from exc

    def queues(self) -> set[str]:
        try:
            return {_text(q) for q in self.client.smembers("jobkit.queues")}
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot list queues: {exc}") from exc

    def get(self, job_id: str) -> JobRecord | None:
        try:
            raw = self.client.lrange(job_key(job_id), 0, -1)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read job {job_id}: {exc}") from exc
        return fold(job_id, raw)

    def done(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(done_key(key))
                found = pipe.execute()
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read idempotency keys: {exc}") from exc
        return {key for key, hit in zip(keys, found, strict=True) if hit}

    def close(self) -> None:
        self.client.close()


def _ms(duration: timedelta) -> int:
    return max(1, round(duration.total_seconds() * 1000))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
