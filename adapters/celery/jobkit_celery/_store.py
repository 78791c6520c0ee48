"""`RedisJobStore`: job records and completed idempotency keys in Redis.

Write-optimised: every event is one RPUSH onto the job's event list (pipelined with the key's
expiry), and a record is folded from the list when read. A success also sets the dedup key.

Keys (all expire after `ttl`): ``jobkit.job.<id>`` (list of JSON events),
``jobkit.done.<dedup key>`` (set when the job succeeded), ``jobkit.redeliveries.<id>.<attempt>``
(how often a message was redelivered after a crash).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import redis

import jobkit
from jobkit import EventKind, JobEvent, JobRecord


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
        record = jobkit.apply_event(record, event)
    return record


# KEYS: job's event list, dedup key. ARGV: event, ttl, "1" to mark the key done.
_FINISH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], 1, 'EX', ARGV[2]) end
return 1
"""


class RedisJobStore(jobkit.JobStore):
    """Thread-safe (redis-py's client is). Safe to use after fork (redis-py reconnects).

    The worker makes two calls per job: `is_done` (one EXISTS) before running it and `finish`
    (one Lua script call: no redis-py pipeline object to build, which costs more CPU than the
    call) before the ack. It records no STARTED event: the dedup check is what correctness
    needs before a run; the STARTED write it came with cost more than the check.
    """

    def __init__(self, url: str, *, ttl: timedelta = timedelta(days=7)) -> None:
        self.url = url
        self.ttl = int(ttl.total_seconds())
        self.client = redis.Redis.from_url(url)
        self._finish = self.client.register_script(_FINISH)

    def _push(self, pipe: Any, events: Sequence[JobEvent]) -> None:
        for event in events:
            key = job_key(event.job_id)
            pipe.rpush(key, encode_event(event))
            pipe.expire(key, self.ttl)
            if event.kind is EventKind.SUCCEEDED:
                pipe.set(done_key(jobkit.dedup_key(event.job_id, event.key)), 1, ex=self.ttl)

    def record(self, events: Sequence[JobEvent]) -> None:
        try:
            with self.client.pipeline(transaction=True) as pipe:
                self._push(pipe, events)
                pipe.execute()
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def is_done(self, key: str) -> bool:
        """True if a job with dedup key `key` succeeded already (one EXISTS, nothing written)."""
        try:
            return bool(self.client.exists(done_key(key)))
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read idempotency key: {exc}") from exc

    def finish(self, event: JobEvent) -> None:
        """Record the event that ends an attempt (one round trip)."""
        done = done_key(jobkit.dedup_key(event.job_id, event.key))
        flag = "1" if event.kind is EventKind.SUCCEEDED else "0"
        try:
            self._finish(
                keys=[job_key(event.job_id), done], args=[encode_event(event), self.ttl, flag]
            )
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def redelivered(self, job_id: str, attempt: int) -> int:
        """Count one more crash redelivery of the message (job, attempt); returns the count."""
        key = f"jobkit.redeliveries.{job_id}.{attempt}"
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self.ttl)
                count = int(pipe.execute()[0])
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot count a redelivery: {exc}") from exc
        return count

    def remember_queue(self, queue: str) -> None:
        try:
            self.client.sadd("jobkit.queues", queue)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record queue {queue!r}: {exc}") from exc

    def queues(self) -> set[str]:
        try:
            return {_text(q) for q in self.client.smembers("jobkit.queues")}
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot list queues: {exc}") from exc

    def remember_delay(self, ttl_ms: int) -> None:
        """Note a delay bucket in use, so that other processes (`jobkit status`) count it."""
        try:
            self.client.sadd("jobkit.delay_ttls", ttl_ms)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record a delay bucket: {exc}") from exc

    def delay_ttls(self) -> set[int]:
        try:
            return {int(_text(t)) for t in self.client.smembers("jobkit.delay_ttls")}
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot list delay buckets: {exc}") from exc

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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
