"""`RedisJobStore`: job records, completed idempotency keys and start counts in RQ's Redis.

Keys (each with a TTL, so Redis deletes them itself): ``jobkit:rq:job:<id>`` (list of JSON
events, folded when read; `Retention.records`), ``jobkit:rq:done:<dedup key>`` (set when the job
succeeded; `Retention.keys`: the dedup window), ``jobkit:rq:starts:<id>`` (how often the RQ job
has started: its attempt count; reset by a replay), ``jobkit:rq:running:<id>`` (the RQ
execution that last started it; `Retention.records`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.client import Pipeline

import jobkit
from jobkit import JobRecord, spi
from jobkit.spi import EventKind, JobEvent, Retention


def starts_key(job_id: str) -> str:
    return f"jobkit:rq:starts:{job_id}"


def _record_key(job_id: str) -> str:
    return f"jobkit:rq:job:{job_id}"


def _running_key(job_id: str) -> str:
    return f"jobkit:rq:running:{job_id}"


def _done_key(key: str) -> str:
    return f"jobkit:rq:done:{key}"


def _encode(event: JobEvent) -> str:
    return json.dumps(
        {
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


# KEYS: the dedup key, the start counter, the job's running marker, its queue's
# StartedJobRegistry. ARGV: ttl (s), this execution's registry member ('' if unknown), now (s).
# -1: done already; 0: another execution whose registry entry is live runs the job (a copy
# queued twice); else the start count, and the marker names this execution.
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if ARGV[2] ~= '' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then
    local live = redis.call('ZSCORE', KEYS[4], holder)
    if live and (live == 'inf' or tonumber(live) > tonumber(ARGV[3])) then return 0 end
  end
  redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[1])
end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return n
"""


# KEYS: the job's event list, its dedup key. ARGV: event, records ttl (ms), "1" to mark the
# key done, keys ttl (ms). One event in one call (a MULTI would be five commands).
_FINISH = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] == '1' then redis.call('SET', KEYS[2], 1, 'PX', ARGV[4]) end
return 1
"""


class RedisJobStore(spi.JobStore):
    """Thread-safe (redis-py's client is), and usable after a fork (redis-py reconnects).
    Every call is one round trip; each raises `BrokerUnavailable` when Redis cannot be reached.
    """

    def __init__(self, client: redis.Redis, *, retention: Retention) -> None:
        self.client = client
        self.retention = retention
        self._records_ms = _ms(retention.records)
        self._keys_ms = _ms(retention.keys)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)

    def record(self, events: Sequence[JobEvent]) -> None:
        if len(events) == 1:
            self._record_one(events[0])
            return
        try:
            with self.client.pipeline(transaction=True) as pipe:
                for event in events:
                    self.record_in(pipe, event)
                pipe.execute()
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def _record_one(self, event: JobEvent) -> None:
        done = _done_key(spi.dedup_key(event.job_id, event.key))
        flag = "1" if event.kind is EventKind.SUCCEEDED else "0"
        try:
            self._finish(
                keys=[_record_key(event.job_id), done],
                args=[_encode(event), self._records_ms, flag, self._keys_ms],
            )
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot record job events: {exc}") from exc

    def begin(
        self, job_id: str, key: str, *, execution: str = "", registry: str = ""
    ) -> int | None:
        """About to start RQ job `job_id`: None if its dedup `key` succeeded already; else count
        one more start and return the count (1 for a first start). With `execution` (this
        run's member of the StartedJobRegistry `registry`): 0, counting nothing, while another
        execution of the job holds a live entry there. RQ's cleanup, run by two processes at
        once (a worker's maintenance and `rq info`), can queue an abandoned job twice; the
        second copy must not run beside the first."""
        keys, args = self._begin_call(job_id, key, execution, registry)
        try:
            starts = int(self._begin(keys=keys, args=args))
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read idempotency key: {exc}") from exc
        return None if starts < 0 else starts

    def begin_in(
        self, pipe: Pipeline, job_id: str, key: str, *, execution: str = "", registry: str = ""
    ) -> Callable[[Sequence[Any]], int | None]:
        """`begin`, queued on `pipe`: a transaction that someone else executes (RQ's preparation
        of the job), which saves `begin` its own round trip. Returns how to read `begin`'s
        answer out of the list `pipe.execute()` returns. Sent as EVAL, not EVALSHA: a Redis
        whose script cache was emptied still runs it, and redis-py's pipeline would otherwise
        ask SCRIPT EXISTS first, a round trip of its own. Never raises (queues only)."""
        keys, args = self._begin_call(job_id, key, execution, registry)
        index = len(pipe.command_stack)
        pipe.eval(_BEGIN, len(keys), *keys, *args)

        def answer(results: Sequence[Any]) -> int | None:
            starts = int(results[index])
            return None if starts < 0 else starts

        return answer

    def _begin_call(
        self, job_id: str, key: str, execution: str, registry: str
    ) -> tuple[list[str], list[Any]]:
        ttl = max(1, round(self.retention.records.total_seconds()))
        keys = [_done_key(key), starts_key(job_id), _running_key(job_id), registry or "-"]
        return keys, [ttl, execution, time.time()]

    def record_in(self, pipe: Pipeline, event: JobEvent) -> None:
        """`record` of one event, queued on `pipe` (RQ's transaction that files the job
        finished, so that the record and the done key commit with it). Never raises."""
        key = _record_key(event.job_id)
        pipe.rpush(key, _encode(event))
        pipe.pexpire(key, self._records_ms)
        if event.kind is EventKind.SUCCEEDED:
            pipe.set(_done_key(spi.dedup_key(event.job_id, event.key)), 1, px=self._keys_ms)

    def get(self, job_id: str) -> JobRecord | None:
        try:
            raw = self.client.lrange(_record_key(job_id), 0, -1)
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read job {job_id}: {exc}") from exc
        record: JobRecord | None = None
        for item in raw:
            data: dict[str, Any] = json.loads(item)
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

    def done(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(_done_key(key))
                found = pipe.execute()
        except redis.RedisError as exc:
            raise jobkit.BrokerUnavailable(f"cannot read idempotency keys: {exc}") from exc
        return {key for key, hit in zip(keys, found, strict=True) if hit}


def _ms(duration: timedelta) -> int:
    return max(1, round(duration.total_seconds() * 1000))
