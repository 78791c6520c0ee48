"""The worker's buffer of leased jobs, shared by the receiver thread and the main thread.

It also keeps what this worker knows of idempotency keys, so that two deliveries of the same key
that arrive together do not both run: the second waits while the first runs, and is acked
without running once the first has succeeded. (Across workers, the job store's record of
succeeded keys does the same once the first success is recorded.)

Thread-safe: every method takes the one lock.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import timedelta

from jobkit.store import dedup_key
from jobkit.worker._pool import Running

_REMEMBERED_KEYS = 10_000


def key_of(job: Running) -> str:
    return dedup_key(job.envelope.id, job.envelope.idempotency_key)


class Buffer:
    """`remember` is how long a succeeded key dedups here: the store's keys window, so that a
    duplicate arriving after the window runs again here too."""

    def __init__(
        self, capacity: int, *, processes: int = 1, remember: timedelta = timedelta(hours=24)
    ) -> None:
        self._remember = remember.total_seconds()
        self.capacity = capacity
        self.processes = processes
        self._jobs: deque[Running] = deque()
        self._held = 0  # buffered + running: what this worker holds leases on
        self._idle_at: float | None = time.monotonic()  # when `_held` last fell to 0
        self._running_keys: dict[str, int] = {}
        self._succeeded: OrderedDict[str, float] = OrderedDict()  # key -> monotonic expiry
        self._cond = threading.Condition()

    def __len__(self) -> int:
        with self._cond:
            return len(self._jobs)

    def idle_since(self) -> float | None:
        """Since when (monotonic) no job has been buffered or running; None while one is."""
        with self._cond:
            return self._idle_at

    def _let_go(self, n: int) -> None:
        """`n` jobs are no longer held. Call with the lock held."""
        self._held -= n
        if self._held == 0 and n:
            self._idle_at = time.monotonic()

    def room(self) -> int:
        with self._cond:
            return self.capacity - self._held

    def wait_for_room(self, timeout: float, *, batch: int = 1) -> bool:
        """Block up to `timeout` s until the worker may lease more: room for `batch` jobs, or
        any room once no job waits for a process (so a process never idles for want of a
        lease). Returns whether it may."""
        with self._cond:
            if self._may_lease(batch):
                return True
            self._cond.wait(timeout)
            return self._may_lease(batch)

    def _may_lease(self, batch: int) -> bool:
        room = self.capacity - self._held
        return room >= batch or (room > 0 and self._held <= self.processes)

    def add(self, jobs: Iterable[Running]) -> None:
        with self._cond:
            for job in jobs:
                self._jobs.append(job)
                self._held += 1
                self._idle_at = None

    def requeue(self, jobs: Iterable[Running]) -> None:
        """Put leased jobs that did not start back at the front, in order."""
        with self._cond:
            for job in reversed(list(jobs)):
                job.started = job.deadline = None
                self._unmark(key_of(job))
                self._jobs.appendleft(job)

    def take(self, now: float) -> tuple[Running | None, list[Running], list[Running]]:
        """The next job to run (marked running); the duplicates of succeeded keys found on the
        way (removed and no longer held; the caller acks them); and the jobs found on the way
        whose lease lapsed by `now` (monotonic; removed and no longer held: see
        `Running.lapsed`). Skips jobs whose key is running now."""
        duplicates: list[Running] = []
        lapsed: list[Running] = []
        with self._cond:
            self._forget_expired()
            for job in list(self._jobs):
                key = key_of(job)
                if key in self._succeeded:
                    self._jobs.remove(job)
                    self._let_go(1)
                    duplicates.append(job)
                    continue
                if job.lapsed(now):
                    self._jobs.remove(job)
                    self._let_go(1)
                    lapsed.append(job)
                    continue
                if self._running_keys.get(key):
                    continue
                self._jobs.remove(job)
                self._running_keys[key] = 1
                break
            else:
                job = None
            if lapsed:
                self._cond.notify_all()  # room for the receiver
            return job, duplicates, lapsed

    def keys_ahead(self, n: int) -> list[str]:
        """The keys of the next `n` buffered jobs not yet known to have succeeded (the ones
        `take` would look at first), to check against the job store before dispatching."""
        with self._cond:
            keys: list[str] = []
            for job in self._jobs:
                if len(keys) >= n:
                    break
                key = key_of(job)
                if key not in self._succeeded:
                    keys.append(key)
            return keys

    def succeeded_elsewhere(self, keys: Iterable[str]) -> None:
        """Keys the job store says have succeeded (e.g. on another worker): `take` hands their
        buffered jobs back as duplicates instead of running them."""
        with self._cond:
            for key in keys:
                self._remember_succeeded(key)

    def ended(self, job: Running, *, succeeded: bool) -> None:
        """A job handed out by `take` has ended; its lease is gone."""
        with self._cond:
            key = key_of(job)
            self._unmark(key)
            if succeeded:
                self._remember_succeeded(key)
            self._let_go(1)
            self._cond.notify()

    def _remember_succeeded(self, key: str) -> None:
        """Dedup `key` here for the keys window (newest last, at most `_REMEMBERED_KEYS`)."""
        self._succeeded.pop(key, None)
        self._succeeded[key] = time.monotonic() + self._remember
        if len(self._succeeded) > _REMEMBERED_KEYS:
            self._succeeded.popitem(last=False)

    def _forget_expired(self) -> None:
        now = time.monotonic()
        while self._succeeded and next(iter(self._succeeded.values())) <= now:
            self._succeeded.popitem(last=False)

    def _unmark(self, key: str) -> None:
        count = self._running_keys.get(key, 0)
        if count > 1:
            self._running_keys[key] = count - 1
        else:
            self._running_keys.pop(key, None)

    def drop_lapsed(self, now: float) -> list[Running]:
        """Remove and return the buffered jobs whose lease lapsed by `now` (monotonic; see
        `Running.lapsed`): no longer held, the broker delivers them again."""
        with self._cond:
            lapsed = [job for job in self._jobs if job.lapsed(now)]
            for job in lapsed:
                self._jobs.remove(job)
                self._let_go(1)
            return lapsed

    def drain(self) -> list[Running]:
        """Remove and return every buffered job (to release them at shutdown)."""
        with self._cond:
            jobs = list(self._jobs)
            self._jobs.clear()
            self._let_go(len(jobs))
            self._cond.notify_all()
            return jobs

    def snapshot(self) -> list[Running]:
        with self._cond:
            return list(self._jobs)

    def wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()
