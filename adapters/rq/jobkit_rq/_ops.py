"""Dead letters (RQ's FailedJobRegistry), replay, purge and queue depths, read straight from
RQ's keys so that jobkit and RQ's tools (``rq info``, rq-dashboard) see the same jobs.

A dead letter's body is the job's envelope as jobkit encodes it (its attempt count and reason
kept in ``job.meta``), or, for a job whose data cannot be decoded, its data bytes unchanged.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import redis
from rq import Queue
from rq.job import Job

import jobkit
from jobkit import spi
from jobkit.spi import DeadLetter, QueueStats
from jobkit_rq._runtime import Runtime, fresh
from jobkit_rq._store import starts_key
from jobkit_rq._wire import META, REASON, meta_of


def _unavailable(runtime: Runtime, what: str, exc: Exception) -> jobkit.BrokerUnavailable:
    return jobkit.BrokerUnavailable(
        f"cannot {what} on {spi.redact_url(runtime.settings.url)}: {exc}"
    )


@contextmanager
def translated(runtime: Runtime, what: str) -> Iterator[None]:
    """Raise `BrokerUnavailable` (saying what was asked) for a Redis error inside."""
    try:
        yield
    except redis.RedisError as exc:
        raise _unavailable(runtime, what, exc) from exc


def known_queues(runtime: Runtime) -> list[str]:
    prefix = Queue.redis_queue_namespace_prefix
    try:
        keys = runtime.client.smembers(Queue.redis_queues_keys)
    except redis.RedisError as exc:
        raise _unavailable(runtime, "list queues", exc) from exc
    return sorted(_text(k)[len(prefix) :] for k in keys)


def stats(runtime: Runtime, queues: Sequence[str] | None = None) -> list[QueueStats]:
    names = list(queues) if queues is not None else known_queues(runtime)
    try:
        with runtime.client.pipeline(transaction=False) as pipe:
            for name in names:
                queue = runtime.queue(name)
                pipe.llen(queue.key)
                pipe.zcard(queue.started_job_registry.key)
                pipe.llen(queue.intermediate_queue_key)
                pipe.zcard(queue.scheduled_job_registry.key)
                pipe.zcard(queue.failed_job_registry.key)
            counts = [int(n) for n in pipe.execute()] if names else []
        if not names:
            runtime.client.ping()
    except redis.RedisError as exc:
        raise _unavailable(runtime, "read queue depths", exc) from exc
    out = []
    for i, name in enumerate(names):
        ready, started, moving, delayed, dead = counts[5 * i : 5 * i + 5]
        out.append(
            QueueStats(
                queue=name, ready=ready, in_flight=max(started, moving), delayed=delayed, dead=dead
            )
        )
    return out


def _dead_letter(runtime: Runtime, queue: str, job_id: str) -> DeadLetter | None:
    raw = runtime.client.hgetall(f"{Job.redis_job_namespace_prefix}{job_id}")
    if not raw:
        return None
    fields: dict[str, bytes] = {
        _text(k): v if isinstance(v, bytes) else v.encode() for k, v in raw.items()
    }
    loaded = runtime.load(job_id, queue)
    if loaded is not None:
        job, env = loaded
        body = env.encode()
        reason = str(job.meta.get(REASON) or "")
        if not reason:
            result = job.latest_result()
            lines = (result.exc_string or "").strip().splitlines() if result else []
            reason = lines[-1] if lines else ""
    else:  # undecodable: its data bytes as they are
        data = fields.get("data", b"")
        try:
            body = zlib.decompress(data)
        except zlib.error:
            body = data
        reason = _meta_reason(fields.get("meta")) or "undecodable: RQ cannot read its data"
    starts = runtime.client.get(starts_key(job_id))
    ended = fields.get("ended_at")
    return DeadLetter(
        queue=queue,
        id=job_id,
        body=body,
        reason=reason or "failed",
        dead_at=_time(ended),
        deliveries=int(starts or 0),
    )


def dead_letters(runtime: Runtime, queue: str, limit: int) -> list[DeadLetter]:
    key = runtime.queue(queue).failed_job_registry.key
    try:
        ids = [_text(i) for i in runtime.client.zrange(key, 0, max(limit, 1) - 1)]
        out = [_dead_letter(runtime, queue, job_id) for job_id in ids]
    except redis.RedisError as exc:
        raise _unavailable(runtime, "list dead letters", exc) from exc
    return [d for d in out if d is not None]


# KEYS: failed registry, queue list, job hash, starts counter. ARGV: job id.
# Claims the dead job (ZREM) and queues it; 0 if another replay or purge took it first.
_REQUEUE = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[3], 'status', 'queued')
redis.call('HDEL', KEYS[3], 'ended_at')
redis.call('DEL', KEYS[4])
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
"""


def replay(runtime: Runtime, queue: str, ids: Sequence[str] | None) -> int:
    """Requeue dead jobs as fresh jobs (attempts reset) on `queue`; how many. A job claimed by
    another replay or purge meanwhile is skipped."""
    rq_queue = runtime.queue(queue)
    registry = rq_queue.failed_job_registry.key
    script = runtime.client.register_script(_REQUEUE)
    try:
        dead = [_text(i) for i in runtime.client.zrange(registry, 0, -1)]
        wanted = dead if ids is None else [i for i in dead if i in set(ids)]
        count = 0
        for job_id in wanted:
            _reset(runtime, job_id, queue)
            job_key = f"{Job.redis_job_namespace_prefix}{job_id}"
            count += int(
                script(keys=[registry, rq_queue.key, job_key, starts_key(job_id)], args=[job_id])
            )
    except redis.RedisError as exc:
        raise _unavailable(runtime, "replay dead letters", exc) from exc
    return count


def _reset(runtime: Runtime, job_id: str, queue: str) -> None:
    """A decodable dead job's envelope back to attempt 0, its retries restored (in place)."""
    loaded = runtime.load(job_id, queue)
    if loaded is None:
        return  # undecodable: requeued as it is (it will land here again)
    job, env = loaded
    job.meta.pop(REASON, None)
    job.meta[META] = meta_of(fresh(env))
    if runtime.settings.hardened:
        job.retries_left = max(env.max_attempts - 1, 0) or None
        job.retry_intervals = [0]
    job.save(include_meta=True)


def purge(runtime: Runtime, queue: str) -> int:
    registry = runtime.queue(queue).failed_job_registry.key
    try:
        count = 0
        for raw in runtime.client.zrange(registry, 0, -1):
            job_id = _text(raw)
            with runtime.client.pipeline(transaction=True) as pipe:
                pipe.zrem(registry, job_id)
                pipe.delete(f"{Job.redis_job_namespace_prefix}{job_id}", starts_key(job_id))
                removed, _ = pipe.execute()
            count += int(removed)
    except redis.RedisError as exc:
        raise _unavailable(runtime, "purge dead letters", exc) from exc
    return count


def _meta_reason(raw: bytes | None) -> str:
    """jobkit's reason from a job's raw ``meta`` field (JSON), or ""."""
    try:
        meta = json.loads(raw or b"{}")
    except ValueError:
        return ""
    return str(meta.get(REASON) or "") if isinstance(meta, dict) else ""


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _time(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(_text(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
