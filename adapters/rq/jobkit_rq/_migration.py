"""Migration (`jobkit migrate`) on RQ: export under a lease, import idempotent by job id.

Export takes a job out of where it waits (the queue list, the ScheduledJobRegistry, the
FailedJobRegistry) into ``jobkit:rq:export``, a sorted set scored by when the export lease ends,
in one Lua call per job (so a worker never runs an exported job, and no job is in both places).
`release` puts it back where it was (its schedule and failure kept); every worker's maintenance
does the same for leases that ran out (`restore_expired`). `commit` deletes the job. Import
creates each job with RQ's atomic unique save (``dedup="native"``): a job id the target has
(waiting, dead, or run and kept for `records_ttl`) is skipped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from rq.exceptions import DuplicateJobError
from rq.job import Job, JobStatus
from rq.scripts import save_unique_job

from jobkit import spi
from jobkit_rq._runtime import Runtime
from jobkit_rq._store import starts_key
from jobkit_rq._wire import META, REASON, meta_of

EXPORTS = "jobkit:rq:export"

SUPPORT = spi.MigrationSupport(
    exports=True, delayed_before_due=True, dead_letters=True, dedup="native"
)

# KEYS: the source (queue list or registry), the export set. ARGV: kind, job id, lease end,
# member. Moves the job into the export set; 0 if it is no longer at the source.
_TAKE = """
if ARGV[1] == 'ready' then
  if redis.call('LREM', KEYS[1], 1, ARGV[2]) == 0 then return 0 end
else
  if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 0 end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"""

# KEYS: the export set, the source. ARGV: member, kind, job id, source score.
# Puts an exported job back where it was; 0 if it is no longer exported.
_PUT_BACK = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[2] == 'ready' then
  redis.call('LPUSH', KEYS[2], ARGV[3])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
end
return 1
"""


# KEYS: the export set, the source, the job hash, its start counter. ARGV: member, kind, job id.
# Deletes an exported job in one step; if its lease ran out and it went back to its source, takes
# it from there; 0 if it is in neither (a worker took it).
_COMMIT = """
local gone = redis.call('ZREM', KEYS[1], ARGV[1])
if gone == 0 then
  if ARGV[2] == 'ready' then
    gone = redis.call('LREM', KEYS[2], 1, ARGV[3])
  else
    gone = redis.call('ZREM', KEYS[2], ARGV[3])
  end
end
if gone == 0 then return 0 end
redis.call('DEL', KEYS[3], KEYS[4])
return 1
"""


def _member(queue: str, job_id: str, kind: str, score: float) -> str:
    return json.dumps([queue, job_id, kind, score], separators=(",", ":"))


def _source(runtime: Runtime, queue: str, kind: str) -> str:
    q = runtime.queue(queue)
    if kind == "ready":
        return str(q.key)
    if kind == "delayed":
        return str(q.scheduled_job_registry.key)
    return str(q.failed_job_registry.key)


class Migration:
    """Export and import for one `Runtime`. Thread-safe (each step is one Redis call or
    script per job)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.client = runtime.client
        self._take = self.client.register_script(_TAKE)
        self._put_back = self.client.register_script(_PUT_BACK)
        self._commit = self.client.register_script(_COMMIT)

    # -- export -------------------------------------------------------------------------------

    def export(
        self, queues: Sequence[str], *, limit: int, lease: timedelta, include_dead: bool
    ) -> list[spi.ExportedJob]:
        self.restore_expired()  # a killed migrator's leases, if no worker gave them back yet
        out: list[spi.ExportedJob] = []
        until = time.time() + lease.total_seconds()
        kinds = ("ready", "delayed", "dead") if include_dead else ("ready", "delayed")
        for queue in queues:
            for kind in kinds:
                source = _source(self.runtime, queue, kind)
                while len(out) < limit:
                    got = self._export_some(queue, kind, source, until, limit - len(out))
                    if not got:
                        break
                    out += got
        return out

    def _export_some(
        self, queue: str, kind: str, source: str, until: float, n: int
    ) -> list[spi.ExportedJob]:
        if kind == "ready":
            candidates = [(_text(i), 0.0) for i in self.client.lrange(source, 0, n - 1)]
        else:
            pairs: list[tuple[bytes, float]] = self.client.zrange(  # type: ignore[assignment]
                source, 0, n - 1, withscores=True
            )
            candidates = [(_text(i), float(s)) for i, s in pairs]
        out = []
        for job_id, score in candidates:
            member = _member(queue, job_id, kind, score)
            if not self._take(keys=[source, EXPORTS], args=[kind, job_id, until, member]):
                continue
            exported = self._exported(queue, job_id, kind, score, member)
            if exported is None:  # undecodable: not migrated, put back
                self._put_back(keys=[EXPORTS, source], args=[member, kind, job_id, score])
                continue
            out.append(exported)
        return out

    def _exported(
        self, queue: str, job_id: str, kind: str, score: float, member: str
    ) -> spi.ExportedJob | None:
        loaded = self.runtime.load(job_id, queue)
        if loaded is None:
            return None
        job, env = loaded
        starts = int(self.client.get(starts_key(job_id)) or 0)
        if kind != "dead":
            env = env.with_attempt(env.attempt + starts)
        delay = timedelta(0)
        if kind == "delayed":
            delay = timedelta(seconds=max(0.0, score - time.time()))
        reason = str(job.meta.get(REASON) or "failed") if kind == "dead" else None
        return spi.ExportedJob(
            queue=queue, id=job_id, body=env.encode(), delay=delay, priority=env.priority,
            dedup_key=spi.dedup_key(env.id, env.idempotency_key), dead_reason=reason,
            receipt=member,
        )  # fmt: skip

    def commit(self, jobs: Sequence[spi.ExportedJob]) -> list[str]:
        taken = []
        for exported in jobs:
            queue, job_id, kind, _ = json.loads(exported.receipt)
            keys = [
                EXPORTS, _source(self.runtime, queue, kind),
                f"{Job.redis_job_namespace_prefix}{job_id}", starts_key(job_id),
            ]  # fmt: skip
            if not self._commit(keys=keys, args=[exported.receipt, kind, job_id]):
                taken.append(job_id)
        return taken

    def release(self, jobs: Sequence[spi.ExportedJob]) -> None:
        for exported in jobs:
            self._restore(exported.receipt)

    def _restore(self, member: str) -> None:
        queue, job_id, kind, score = json.loads(member)
        source = _source(self.runtime, queue, kind)
        self._put_back(keys=[EXPORTS, source], args=[member, kind, job_id, score])

    def restore_expired(self) -> int:
        """Put back jobs whose export lease ran out (a migrator that died); how many."""
        expired = self.client.zrangebyscore(EXPORTS, 0, time.time(), start=0, num=500)
        for member in expired:
            self._restore(_text(member))
        return len(expired)

    def held(self, queue: str) -> int:
        members = self.client.zrange(EXPORTS, 0, -1)
        return sum(1 for m in members if json.loads(_text(m))[0] == queue)

    # -- import -------------------------------------------------------------------------------

    def import_jobs(self, jobs: Sequence[spi.ExportedJob]) -> spi.ImportOutcome:
        now = self.runtime.clock.now()
        copied: set[str] = set()
        skipped: set[str] = set()
        for exported in jobs:
            env = _due_as_exported(spi.decode(exported.body), exported.delay, now)
            if exported.dead:
                fresh = self._import_dead(env, exported.dead_reason or "")
            else:
                fresh = self.runtime.send_one(env)
            (copied if fresh else skipped).add(exported.id)
        return spi.ImportOutcome(copied=frozenset(copied), skipped=frozenset(skipped - copied))

    def _import_dead(self, env: spi.Envelope, reason: str) -> bool:
        queue = self.runtime.queue(env.queue)
        job = self.runtime.new_job(env)
        job.meta[REASON] = reason
        job.meta[META] = meta_of(env)
        job._status = JobStatus.FAILED
        try:
            save_unique_job(self.client, queue.key, job, enqueue=False)
        except DuplicateJobError:
            return False
        ttl = job.failure_ttl or 0
        expires = math.inf if ttl < 0 else time.time() + ttl
        self.client.zadd(queue.failed_job_registry.key, {env.id: expires})
        self.client.sadd(queue.redis_queues_keys, queue.key)
        return True

    def present(self, ids: Sequence[str]) -> set[str]:
        with self.client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(f"{Job.redis_job_namespace_prefix}{job_id}")
            found = pipe.execute()
        return {job_id for job_id, hit in zip(ids, found, strict=True) if hit}


def _due_as_exported(env: spi.Envelope, delay: timedelta, now: datetime) -> spi.Envelope:
    """`env` due `delay` from `now`, its own `not_before` kept when that says the same within
    a second (the clocks' difference, and the source's whole-second schedule), so the envelope
    arrives unchanged."""
    if delay <= timedelta(0):
        late = env.not_before is not None and env.not_before > now
        return replace(env, not_before=None) if late else env
    due = now + delay
    if env.not_before is not None and abs(env.not_before - due) < timedelta(seconds=1.5):
        return env
    return replace(env, not_before=due)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
