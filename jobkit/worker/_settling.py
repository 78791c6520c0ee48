"""What the supervisor tells the store and the broker about ended attempts, in order.

Outcomes (job events) and acks are batched: events are written at most `FLUSH_EVERY` seconds
after a job ends (or once `FLUSH_AT` acks wait, or once the worker has held no job for
`IDLE_FLUSH`: no other outcome is about to join the batch), and always before the acks of their
jobs, so a crash in between re-runs nothing whose key is done. Releases and dead letters are
sent right after the events before them are written. Every call goes through a `CallQueue`:
in order, retried through outages with capped backoff, never blocking the supervisor's loop.

Not thread-safe: used by the supervisor's main thread only.
"""

from __future__ import annotations

import functools
import time
from datetime import datetime, timedelta
from typing import Any

from jobkit.clock import Clock
from jobkit.records import Delivery
from jobkit.store import EventKind, JobEvent, JobStore
from jobkit.transport import Transport
from jobkit.worker._pool import Running
from jobkit.worker._retrying import CallQueue

# Outcomes and acks are written in batches: at most this long after a job ends, or this many.
# A crash loses at most that batch's acks, whose jobs then run again (at-least-once).
FLUSH_EVERY = 0.02
FLUSH_AT = 200
# ...or once the worker has held no job (nothing buffered or running) this long. Not at once:
# under a backlog the buffer empties for a moment before each new lease arrives, and a write
# per lease took SQLite's drain from 8,000 to 5,000 jobs/s; a worker that waits on an empty
# queue (or on a producer that waits for these acks) stays idle longer than that.
IDLE_FLUSH = 0.001


class Settling:
    """The supervisor's pending events, acks, releases and dead letters."""

    def __init__(self, store: JobStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.calls = CallQueue()
        self.events: list[JobEvent] = []
        self.acks: list[Delivery] = []
        self._last_flush = 0.0

    def record(
        self,
        job: Running,
        kind: EventKind,
        error: str | None = None,
        *,
        at: datetime | None = None,
        result: Any = None,
    ) -> None:
        """Add the event that `kind` happened to `job` to the next batch."""
        env = job.envelope
        self.events.append(
            JobEvent(
                job_id=env.id,
                job=env.job,
                kind=kind,
                attempt=job.attempt,
                at=at or self.clock.now(),
                error=error,
                key=env.idempotency_key,
                result=result,
            )
        )

    def flush_events(self) -> None:
        """Queue the write of the events so far (before any call queued after this)."""
        if self.events:
            events, self.events = folded(self.events), []
            self.calls.add("record job events", functools.partial(self.store.record, events))

    def wait_at_most(self, now: float, *, idle_since: float | None) -> float | None:
        """How long the supervisor may wait (s, from `now`, monotonic) before it must `flush`
        what is pending, or retry a call held back by an outage; None when nothing is pending.
        Without this, pending acks would wait for whatever wakes the loop next: with jobs that
        arrive in batches, the next batch, whose processing then waits for those acks.
        `idle_since`: since when the worker has held no job (None: it holds one; see `due`)."""
        if len(self.calls):  # `flush` is what writes and retries
            due = max(self._last_flush + FLUSH_EVERY, self.calls.streak.next_try)
        elif not self.events and not self.acks:
            return None
        else:
            due = self._write_by(idle_since)
        return max(due - now, 0.0)

    def due(self, *, idle_since: float | None) -> bool:
        """Whether the batch should be written now: `FLUSH_EVERY` has passed since the last
        one, `FLUSH_AT` acks wait, or the worker has held no job since `idle_since` for
        `IDLE_FLUSH` (no outcome is about to join the batch, and a broker that counts unacked
        messages as in flight, or a producer that waits for the queue to shrink, should not
        wait for the interval)."""
        return time.monotonic() >= self._write_by(idle_since) or len(self.acks) >= FLUSH_AT

    def _write_by(self, idle_since: float | None) -> float:
        """When (monotonic) the pending batch is due, by the interval or by idleness."""
        by = self._last_flush + FLUSH_EVERY
        if idle_since is not None and (self.events or self.acks):
            by = min(by, idle_since + IDLE_FLUSH)
        return by

    def flush(self, transport: Transport) -> None:
        """Record outcomes, then ack, then run every queued call that can run now."""
        self._last_flush = time.monotonic()
        self.flush_events()
        if self.acks:
            acks, self.acks = self.acks, []
            self.calls.add(f"ack {len(acks)} jobs", functools.partial(transport.ack, acks))
        self.calls.run()

    def release(self, transport: Transport, job: Running, delay: timedelta) -> None:
        """Queue the counted release of `job` (after the events queued before it)."""
        self.calls.add(
            f"release job {job.envelope.id}",
            functools.partial(transport.release, job.delivery, delay=delay),
        )

    def release_uncounted(self, transport: Transport, job: Running) -> None:
        """Queue the release of `job`, which never started, without using an attempt."""
        self.calls.add(
            f"release job {job.envelope.id} (never started)",
            functools.partial(transport.release_uncounted, job.delivery),
        )

    def dead_letter(self, transport: Transport, job: Running, reason: str) -> None:
        """Queue the move of `job` to the dead-letter queue with `reason`."""
        self.calls.add(
            f"dead-letter job {job.envelope.id}",
            functools.partial(transport.dead_letter, job.delivery, reason=reason),
        )

    def drain(self, seconds: float) -> None:
        """At exit: keep trying the queued calls for up to `seconds` (see `CallQueue.drain`)."""
        self.calls.drain(seconds)


def folded(events: list[JobEvent]) -> list[JobEvent]:
    """`events` without each STARTED that a later event of the same attempt (or a later one)
    in the batch supersedes: a store folds both into the same record as the later one alone
    (`apply_event`), and nobody could have read the RUNNING state in between, since the batch
    is written in one call. Most jobs start and end within one batch, so this halves the
    records folded per job (the store call runs in the supervisor)."""
    later: dict[str, JobEvent] = {}
    kept: list[JobEvent] = []
    for event in reversed(events):
        after = later.get(event.job_id)
        if not (
            event.kind is EventKind.STARTED
            and after is not None
            and after.attempt >= event.attempt
            and (event.key is None or after.key == event.key)
        ):
            kept.append(event)
        later[event.job_id] = event
    kept.reverse()
    return kept
