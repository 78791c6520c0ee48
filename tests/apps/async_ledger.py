"""Async jobs on the ledger app (`tests.apps.ledger`): run workers with
``--app tests.apps.async_ledger:app`` so they know these jobs too.

Each job records its run (with the attempt from `current_job()`, which must reach the coroutine)
and applies its effect after an ``await``, so an effect in the ledger proves the coroutine ran to
completion rather than being created and dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from jobkit import RetryPolicy
from tests.apps.ledger import _run, app, count

__all__ = ["app"]

NO_RETRY = RetryPolicy(max_attempts=1)


async def _effect(key: str, sleep: float) -> None:
    db = _run(key)
    await asyncio.sleep(sleep)
    with db:
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, time.time()))


@app.job(queue="work")
async def arecord(key: str, sleep: float = 0.01) -> str:
    """Record a run, await, then apply the effect; returns the key."""
    await _effect(key, sleep)
    return key


@app.job(queue="work", retry=RetryPolicy(max_attempts=3, backoff_base=timedelta(0)))
async def aflaky(key: str, failures: int) -> int:
    """Fail (transiently) on the first `failures` runs of `key`, then succeed."""
    await _effect(f"{key}-attempt", 0.0)
    db = _run(key)
    (runs,) = db.execute("SELECT COUNT(*) FROM runs WHERE key = ?", (key,)).fetchone()
    if runs <= failures:
        raise ConnectionError(f"run {runs} of {key} fails")
    await _effect(f"{key}-done", 0.0)
    return int(runs)


@app.job(queue="work", retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)),
         time_limit=timedelta(seconds=1))  # fmt: skip
async def ahang(key: str, seconds: float) -> str:
    """Await longer than the time limit: the attempt must be stopped, never the effect applied."""
    await _effect(key, seconds)
    return key


@app.job(queue="work", retry=NO_RETRY)
def forgot_async(key: str) -> Coroutine[Any, Any, str]:
    """A plain def that returns a coroutine: jobkit must fail it, not record a success."""
    return arecord.fn(key)


@app.job(queue="work", retry=NO_RETRY)
async def returns_tuple(key: str) -> tuple[str, int]:
    """Its result is not exact JSON (a tuple would come back as a list)."""
    await _effect(key, 0.0)
    return (key, 1)


def effects(path: str, key: str) -> int:
    return count(path, "SELECT COUNT(*) FROM effects WHERE key = ?", key)
