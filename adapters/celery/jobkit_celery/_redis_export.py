"""Export for migration on Celery+Redis: jobs are taken into a hold under a lease, atomically.

One Lua script moves up to N messages of a queue, oldest first, from kombu's ready lists
(priority order), the delayed set ``jobkit.delayed.<queue>`` and (with dead letters) the list
``jobkit.dlq.<queue>`` into the hash ``jobkit.hold.<queue>`` (field: a tag; value: where it came
from and the raw entry), with the lease end in the sorted set ``jobkit.hold-until.<queue>``. No
worker sees a held message. `commit` deletes held entries; `release` puts them back where they
were (a delayed one with its due time). A migrator killed while holding leaves them held until
the next export of that queue puts back every hold whose lease has ended; `stats` counts held
messages as in flight meanwhile, so `jobkit status` shows them.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import jobkit
from jobkit import spi
from jobkit_celery._dlq_record import decode_record
from jobkit_celery._names import delayed_name, dlq_name
from jobkit_celery._redis_ops import RedisOps, list_keys
from jobkit_celery._wire import envelope_from_message

_RESTORE = """
local function restore(hold, untils, tag)
  local value = redis.call('HGET', hold, tag)
  if not value then return 0 end
  local a = string.find(value, '\\n', 1, true)
  local b = string.find(value, '\\n', a + 1, true)
  local c = string.find(value, '\\n', b + 1, true)
  local kind = string.sub(value, 1, a - 1)
  local origin = string.sub(value, a + 1, b - 1)
  local score = string.sub(value, b + 1, c - 1)
  local raw = string.sub(value, c + 1)
  if kind == 'r' then redis.call('RPUSH', origin, raw)
  elseif kind == 'd' then redis.call('ZADD', origin, score, raw)
  else redis.call('LPUSH', origin, raw) end
  redis.call('HDEL', hold, tag)
  redis.call('ZREM', untils, tag)
  return 1
end
"""

EXPORT = (
    _RESTORE
    + """
-- KEYS: hold, untils, delayed, dlq, ready lists...; ARGV: now, until, limit, token, dead
local hold, untils = KEYS[1], KEYS[2]
for _, tag in ipairs(redis.call('ZRANGEBYSCORE', untils, '-inf', ARGV[1])) do
  restore(hold, untils, tag)
end
local limit, n, out = tonumber(ARGV[3]), 0, {}
local function take(kind, origin, score, raw)
  n = n + 1
  local tag = ARGV[4] .. ':' .. n
  redis.call('HSET', hold, tag, kind .. '\\n' .. origin .. '\\n' .. score .. '\\n' .. raw)
  redis.call('ZADD', untils, ARGV[2], tag)
  table.insert(out, tag); table.insert(out, kind); table.insert(out, score)
  table.insert(out, raw)
end
for i = 5, #KEYS do
  while n < limit do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    take('r', KEYS[i], '0', raw)
  end
end
if n < limit then
  local items = redis.call('ZRANGE', KEYS[3], 0, limit - n - 1, 'WITHSCORES')
  for i = 1, #items, 2 do
    redis.call('ZREM', KEYS[3], items[i])
    take('d', KEYS[3], items[i + 1], items[i])
  end
end
if ARGV[5] == '1' then
  while n < limit do
    local raw = redis.call('LPOP', KEYS[4])
    if not raw then break end
    take('x', KEYS[4], '0', raw)
  end
end
return out
"""
)

RELEASE = (
    _RESTORE
    + """
for i = 1, #ARGV do restore(KEYS[1], KEYS[2], ARGV[i]) end
return 0
"""
)

COMMIT = """
local gone = {}
for i = 1, #ARGV do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 0 then table.insert(gone, ARGV[i]) end
  redis.call('ZREM', KEYS[2], ARGV[i])
end
return gone
"""


def hold_name(queue: str) -> str:
    return f"jobkit.hold.{queue}"


def until_name(queue: str) -> str:
    return f"jobkit.hold-until.{queue}"


class RedisExport:
    """The export primitives on one Redis broker. Thread-safe (redis-py is)."""

    def __init__(self, ops: RedisOps) -> None:
        self.ops = ops
        client = ops.client
        self._export = client.register_script(EXPORT)
        self._release = client.register_script(RELEASE)
        self._commit = client.register_script(COMMIT)

    def export(
        self, queue: str, *, limit: int, lease: timedelta, include_dead: bool
    ) -> list[spi.ExportedJob]:
        now = time.time()
        keys = [hold_name(queue), until_name(queue), delayed_name(queue), dlq_name(queue)]
        args: list[str | float] = [
            now,
            now + lease.total_seconds(),
            limit,
            uuid.uuid4().hex,
            int(include_dead),
        ]
        with self.ops._guard("export jobs"):
            flat = self._export(keys=[*keys, *list_keys(queue)], args=args)
        return [
            _exported(queue, _text(tag), _text(kind), float(score), raw, now)
            for tag, kind, score, raw in zip(*[iter(flat)] * 4, strict=True)
        ]

    def commit(self, jobs: Sequence[spi.ExportedJob]) -> list[str]:
        """The ids whose hold was gone (its lease ended and it went back to the queue)."""
        gone: list[str] = []
        for queue, group in _by_queue(jobs).items():
            with self.ops._guard("delete exported jobs"):
                tags = self._commit(
                    keys=[hold_name(queue), until_name(queue)], args=[j.receipt for j in group]
                )
            lost = {_text(t) for t in tags}
            gone += [j.id for j in group if j.receipt in lost]
        return gone

    def release(self, jobs: Sequence[spi.ExportedJob]) -> None:
        for queue, group in _by_queue(jobs).items():
            with self.ops._guard("release exported jobs"):
                self._release(
                    keys=[hold_name(queue), until_name(queue)], args=[j.receipt for j in group]
                )

    def held(self, queue: str) -> int:
        with self.ops._guard("count held jobs"):
            return int(self.ops.client.hlen(hold_name(queue)))


def _by_queue(jobs: Sequence[spi.ExportedJob]) -> dict[str, list[spi.ExportedJob]]:
    groups: dict[str, list[spi.ExportedJob]] = {}
    for job in jobs:
        groups.setdefault(job.queue, []).append(job)
    return groups


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _exported(
    queue: str, tag: str, kind: str, score: float, raw: bytes, now: float
) -> spi.ExportedJob:
    if kind == "x":
        dead = decode_record(raw, queue)
        return spi.ExportedJob(
            queue=queue, id=dead.id, body=dead.body, dead_reason=dead.reason, receipt=tag
        )
    if kind == "d":  # "<list key>\n<kombu message>"
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else raw
    delay = timedelta(seconds=max(score - now, 0.0)) if kind == "d" else timedelta(0)
    try:
        message: dict[str, Any] = json.loads(raw)
        body = message["body"]
        if (message.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        env = envelope_from_message(message.get("headers") or {}, body)
    except (ValueError, TypeError, KeyError, jobkit.SerializationError):
        # not a jobkit task: moved as it is (the target's worker dead-letters it)
        job_id = uuid.uuid5(uuid.NAMESPACE_OID, raw.hex()).hex
        return spi.ExportedJob(queue=queue, id=job_id, body=raw, delay=delay, receipt=tag)
    return spi.ExportedJob(
        queue=queue,
        id=env.id,
        body=env.encode(),
        delay=delay,
        priority=env.priority,
        dedup_key=env.idempotency_key,
        receipt=tag,
    )
