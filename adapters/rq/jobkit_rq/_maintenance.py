"""The maintenance every jobkit RQ worker runs (in its supervising process, every
`Settings.maintenance`), instead of RQ's scheduler and its 10-minute registry cleaning.

* due jobs (delayed jobs, retries after their backoff) move from the queue's
  ScheduledJobRegistry onto the queue, one Lua call per queue: atomic, so any number of workers
  may run it at once and none holds a lock that a killed worker would leave behind;
* jobs whose heartbeat stopped (their worker was killed) leave RQ's StartedJobRegistry through
  RQ's own cleanup, which requeues them while they have retries left (jobkit counts attempts),
  and jobs stuck between dequeue and start are handled by RQ's intermediate-queue cleanup. Both
  run under a lock per queue that expires after three maintenance periods.

After a pass that could not reach Redis, the abandoned-job cleanup waits `grace` (a heartbeat
TTL and a beat) once Redis answers again: running jobs' heartbeats lapsed during the outage
because their workers could not write them, not because the workers died, and they resume
within a beat.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta

import redis
from rq import Queue
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.worker import BaseWorker

logger = logging.getLogger("jobkit.rq")

# KEYS: scheduled registry, queue list, rq:queues. ARGV: now (s), job key prefix, queue key,
# limit. Moves due job ids onto the queue (oldest due first); returns how many.
_MOVE_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, ARGV[4])
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local key = ARGV[2] .. id
    if redis.call('EXISTS', key) == 1 then
      redis.call('HSET', key, 'status', 'queued')
      redis.call('RPUSH', KEYS[2], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('SADD', KEYS[3], ARGV[3]) end
return moved
"""


class Maintenance:
    """Not thread-safe: one per supervising process. Errors are logged, never raised (a broker
    outage is waited out by the next pass)."""

    def __init__(
        self,
        client: redis.Redis,
        queues: Sequence[Queue],
        worker: BaseWorker,
        every: timedelta,
        grace: timedelta,
    ) -> None:
        self.client = client
        self.queues = list(queues)
        self.worker = worker  # an RQ worker object, for RQ's intermediate-queue cleanup
        self.every = every
        self.grace = grace
        self._move_due = client.register_script(_MOVE_DUE)
        self._unreachable = False
        self._clean_from = 0.0  # time.monotonic() before which abandoned jobs are left alone

    def run_once(self) -> None:
        for queue in self.queues:
            try:
                self.move_due(queue)
                if self._unreachable:  # Redis answers again: let running jobs beat first
                    self._unreachable = False
                    self._clean_from = time.monotonic() + self.grace.total_seconds()
                if time.monotonic() >= self._clean_from:
                    self._clean(queue)
            except redis.RedisError as exc:
                self._unreachable = True
                logger.warning("maintenance of RQ queue %s: %s (retrying)", queue.name, exc)
            except Exception:
                logger.exception("maintenance of RQ queue %s failed", queue.name)

    def move_due(self, queue: Queue) -> int:
        moved = 0
        keys = [queue.scheduled_job_registry.key, queue.key, Queue.redis_queues_keys]
        while True:
            args = [int(time.time()), Job.redis_job_namespace_prefix, queue.key, 500]
            n = int(self._move_due(keys=keys, args=args))
            moved += n
            if n < 500:
                return moved

    def _clean(self, queue: Queue) -> None:
        lock = f"jobkit:rq:maintenance:{queue.name}"
        ttl_ms = max(1000, round(3 * self.every.total_seconds() * 1000))
        if not self.client.set(lock, 1, nx=True, px=ttl_ms):
            return
        try:
            StartedJobRegistry(
                queue.name, connection=self.client, job_class=queue.job_class,
                serializer=queue.serializer,
            ).cleanup()  # fmt: skip
            queue.intermediate_queue.cleanup(self.worker, queue)
        finally:
            self.client.delete(lock)
