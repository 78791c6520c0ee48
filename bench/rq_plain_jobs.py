"""The plain RQ side of bench/rq_bench.py: a module as small as the job, because RQ's forking
work-horse imports the job's module anew for every job (the worker never imports it)."""

from __future__ import annotations

import os
import time

MARKS_ENV = "RQ_BENCH_MARKS"
STAMPS_ENV = "JOBKIT_BENCH_STAMPS"  # `_local.STAMPS_ENV` (importing `_local` imports jobkit)


def mark(i: int, n: int) -> None:
    """Jobs ``i < 4`` and ``i >= n - 8`` RPUSH ``time.time()`` to the marks list."""
    if 0 <= i < 4 or i >= n - 8 >= 0:
        import redis

        client = redis.Redis.from_url(os.environ[MARKS_ENV])
        client.rpush("marks", time.time())
        client.close()


def plain_noop(i: int, n: int) -> None:
    mark(i, n)


def plain_stamp(sent: float) -> None:
    """The latency job, plain RQ's and (as job ``stamp``) jobkit's: the work of
    ``noop_app.stamp``, append ``time.time() - sent`` to the file named by
    ``JOBKIT_BENCH_STAMPS``."""
    started = time.time()
    with open(os.environ[STAMPS_ENV], "a") as out:
        out.write(f"{started - sent}\n")
