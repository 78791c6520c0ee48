"""Riding out a broker or store that is away: the worker's calls retried with capped backoff.

Every broker and store call of the worker goes through here. A transient failure
(`BrokerUnavailable`: adapters translate connection errors, timeouts, "database is locked" and
5xx answers into it) is retried after 0.1 s, doubling up to 5 s, for as long as it takes; the
first failure of a streak is logged as a warning, the return as a warning too, the failures in
between only at debug level. A worker never exits because its broker was away for a while.

Two shapes, for the worker's two threads:

- `Retrier.call` blocks until the call succeeds (the receiver thread: nothing else to do while
  the broker is away). It gives up with `Stopped` when the worker is asked to stop.
- `CallQueue` never blocks (the supervisor's main thread must keep reading outcomes, enforcing
  time limits and handling signals): calls are made in the order they were added, and a
  transient failure keeps that call and every later one for a later try. Order matters: a job's
  outcome is recorded before its message is acked or released.

Other `JobkitError`s are not retried: `Retrier.call` raises them; `CallQueue` logs them and
drops the call (its message comes back when its lease ends: at least once, never lost).
Not thread-safe: one instance per thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from jobkit.errors import BrokerUnavailable, JobkitError

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 5.0


class Stopped(Exception):
    """The worker was asked to stop while a call was waiting to be retried."""


class Streak:
    """Consecutive transient failures of one thread's calls, and when to try again."""

    def __init__(self, *, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0
        self.since = 0.0
        self.next_try = 0.0
        self.delay = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_try

    def failed(self, what: str, exc: BaseException, now: float) -> float:
        """Count a transient failure of `what`; return how long to wait before the next try."""
        if self.failures == 0:
            self.since = now
            self.delay = self.first
            log.warning(
                "could not %s, retrying (every %s s at most) until it works: %s",
                what,
                self.cap,
                exc,
            )
        else:
            self.delay = min(self.cap, self.delay * 2)
            log.debug("could not %s (failure %d): %s", what, self.failures + 1, exc)
        self.failures += 1
        self.next_try = now + self.delay
        return self.delay

    def succeeded(self, what: str, now: float) -> None:
        if self.failures:
            log.warning(
                "%s worked again after %d failed tries over %.1f s",
                what,
                self.failures,
                now - self.since,
            )
        self.failures = 0
        self.next_try = 0.0


class Retrier:
    """Blocking retries for one thread. `call` returns `fn()`'s value once it succeeds.

    Public as `jobkit.worker.Retrier` for adapters whose worker is not jobkit's (Celery's task
    bodies use it around their store writes). `stop`: an event that ends the retries (`Stopped`);
    none: retry until it works."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop if stop is not None else threading.Event()
        self.streak = Streak()

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Call `fn` until it does not raise `BrokerUnavailable`. Raises `Stopped` if the worker
        stops meanwhile, and any other error of `fn` at once. Blocks as long as the outage."""
        while True:
            if self.stop.is_set() and self.streak.failures:
                raise Stopped(what)
            try:
                value = fn()
            except BrokerUnavailable as exc:
                delay = self.streak.failed(what, exc, time.monotonic())
                if self.stop.wait(delay):
                    raise Stopped(what) from exc
                continue
            self.streak.succeeded(what, time.monotonic())
            return value


class CallQueue:
    """Calls made in order without ever blocking on an outage (see the module docstring)."""

    def __init__(self) -> None:
        self.streak = Streak()
        self._calls: deque[tuple[str, Callable[[], object]]] = deque()

    def __len__(self) -> int:
        return len(self._calls)

    @property
    def waiting(self) -> bool:
        """True while a transient failure holds calls back."""
        return bool(self.streak.failures)

    def add(self, what: str, fn: Callable[[], object]) -> None:
        """Make the call now if nothing waits before it, else after the calls before it."""
        self._calls.append((what, fn))
        self.run()

    def run(self) -> bool:
        """Make the calls that wait, in order, if their next try is due. Returns whether none
        is left."""
        now = time.monotonic()
        if not self.streak.due(now):
            return False
        while self._calls:
            what, fn = self._calls[0]
            try:
                fn()
            except BrokerUnavailable as exc:
                self.streak.failed(what, exc, time.monotonic())
                return False
            except JobkitError as exc:
                log.error("could not %s, giving up on it: %s", what, exc)
            else:
                self.streak.succeeded(what, time.monotonic())
            self._calls.popleft()
        return True

    def drain(self, timeout: float) -> bool:
        """Retry until every call is made or `timeout` s have passed (the exit path). Returns
        whether every call was made; logs what was given up."""
        deadline = time.monotonic() + timeout
        while not self.run():
            wait = self.streak.next_try - time.monotonic()
            if time.monotonic() + max(wait, 0) > deadline:
                for what, _ in self._calls:
                    log.error("could not %s before exiting: the broker or store is away", what)
                self._calls.clear()
                return False
            time.sleep(max(wait, 0.0))
        return True


def connect(what: str, call: Callable[[], None]) -> None:
    """Open a client ahead of its first use (`Transport.connect`, `JobStore.connect`). A
    failure is logged, not raised: the first real call retries through outages as usual."""
    try:
        call()
    except JobkitError as exc:
        log.warning("could not %s yet (retried on first use): %s", what, exc)
