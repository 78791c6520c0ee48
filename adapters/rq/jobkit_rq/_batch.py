"""Enqueue many RQ jobs in one round trip, each refused if RQ already has its id.

RQ's ``enqueue_job(unique=True)`` checks and saves one job in one call of its unique-enqueue
Lua script and ignores any pipeline; its ``enqueue_many`` takes a pipeline but overwrites a job
whose id exists. `enqueue_unique` runs RQ's own unique-enqueue script for every job of a batch on
one pipeline: the same job hash, TTL and push as ``enqueue_job(unique=True)``, in one round trip
per batch (and redis-py's SCRIPT EXISTS) instead of one per job. It uses two RQ 3 internals,
``Queue._prepare_for_queue`` and ``rq.scripts._build_hset_args``, the two steps
``enqueue_job(unique=True)`` takes before its script call; jobkit-rq pins ``rq>=3.0,<4``.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from rq import Queue
from rq.job import Job
from rq.scripts import _build_hset_args, get_unique_enqueue_script


def enqueue_unique(client: redis.Redis, items: Sequence[tuple[Queue, Job]]) -> list[bool]:
    """Push each job (not saved yet) onto the end of its queue, in order, unless RQ has a job
    with its id; per item, True if it was enqueued, False if that id was taken (the existing job
    is left as it was). A job whose id appears twice here is enqueued once, the first time.

    One pipeline, not a transaction: each job is checked and saved atomically by the script, but
    if Redis fails part-way some jobs may be enqueued and the call raises `redis.RedisError`;
    sending the same jobs again enqueues only those that are missing. Thread-safe."""
    script = get_unique_enqueue_script(client)
    with client.pipeline(transaction=False) as pipe:
        for queue, job in items:
            queue._prepare_for_queue(job)  # origin, enqueued_at, status, as enqueue_job does
            ttl = job.ttl if job.ttl is not None else -1
            script(keys=[job.key, queue.key], args=[job.id, "R", ttl, *_build_hset_args(job)],
                   client=pipe)  # fmt: skip
        return [answer == 1 for answer in pipe.execute()]
