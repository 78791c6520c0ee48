"""Keeping the worker's leases on the messages it holds (buffered and running).

A timed lease (SQS's visibility timeout, SQLite's lease column) is extended once less than two
thirds of it remain. One that ran out anyway (a broker or store call slower than the lease, a
stalled machine) means the broker may have delivered the message to another worker already:
a buffered job in that state is dropped, never started (an extension with its stale receipt
would not stop the other copy), and the broker delivers it again. A running one can only be
reported. Leases held until the delivery is settled (RabbitMQ) never lapse.

`Leases.extend` is used by the supervisor's main thread only; `Leases.dropped` and `Unstarted`
are thread-safe (the receiver thread drops lapsed copies too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import timedelta

from jobkit.errors import BrokerUnavailable, JobkitError
from jobkit.logcontext import job_fields
from jobkit.records import Delivery
from jobkit.transport import Transport
from jobkit.worker._buffer import Buffer
from jobkit.worker._pool import Running
from jobkit.worker._retrying import Streak

log = logging.getLogger("jobkit.worker")

# `extend` is called after every phase of the supervisor's loop, so it looks at the held jobs
# at most this often (and at least 12 times per lease): leases are extended with a third gone.
_LOOK_EVERY = 0.05


class Unstarted:
    """Deliveries this worker left unstarted because their lease lapsed, per message. The
    broker counted each (SQS's receive count cannot be lowered); `Screen` takes them off the
    attempt number when the message comes back to this worker, so a lapse costs no attempt
    here. Thread-safe (the supervisor adds, the receiver reads). Bounded: the oldest of more
    than `limit` messages are forgotten."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, delivery: Delivery) -> None:
        key = (delivery.queue, delivery.id)
        with self._lock:  # a key is never absent midway, so `of` reads without the lock
            self._counts[key] = self._counts.get(key, 0) + 1
            self._counts.move_to_end(key)
            if len(self._counts) > self._limit:
                self._counts.popitem(last=False)

    def of(self, delivery: Delivery) -> int:
        """How many of `delivery`'s earlier deliveries this worker left unstarted. Called for
        every delivery (the receiver's screen), so it takes no lock: one dict read."""
        return self._counts.get((delivery.queue, delivery.id), 0)


class Leases:
    """Extends the leases of held jobs and drops buffered ones whose lease lapsed."""

    def __init__(self, *, lease: timedelta, buffer: Buffer, extendable: bool) -> None:
        self.lease = lease
        self.buffer = buffer
        self.extendable = extendable  # the backend's `Capabilities.lease_extension`
        self.unstarted = Unstarted()
        self._streak = Streak()
        self._next_look = 0.0  # monotonic; `extend` looks at the held jobs no sooner

    def dropped(self, jobs: Iterable[Running], now: float) -> None:
        """Report buffered jobs left unstarted because their lease lapsed by `now`: they are
        the broker's again, unsettled, and noted in `unstarted`. Thread-safe (the supervisor
        calls it for what `Buffer.take` dropped, the receiver before it screens a batch)."""
        for job in jobs:
            self.unstarted.add(job.delivery)
            log.warning(
                "lease on job %s ran out %.1f s before it could start; not running this copy "
                "(the broker delivers it again, to this worker without using an attempt). If "
                "this recurs, the lease is short for this broker's round trips: consider a "
                "longer --lease",
                job.envelope.id,
                now - job.lease_until,
                extra=job_fields(job.envelope, job.attempt),
            )

    def extend(self, transport: Transport, running: Iterable[Running], now: float) -> None:
        """Extend every held lease with less than two thirds left: one `Transport.extend`
        call each, blocking for its round trip. During an outage, retried with backoff on
        later calls rather than blocking. Looks at the held jobs at most every `_LOOK_EVERY`."""
        if not self.extendable or now < self._next_look:
            return
        lease = self.lease.total_seconds()
        self._next_look = now + min(_LOOK_EVERY, lease / 12)
        held = [(job, True) for job in self.buffer.snapshot()]
        held += [(job, False) for job in running]
        for job, buffered in held:
            at = time.monotonic()  # the calls before may have taken a while
            if job.lease_until - at >= lease * 2 / 3 or not self._streak.due(at):
                continue
            if job.lapsed(at):
                if buffered:  # its receipt may be stale: `Buffer.take` drops it instead
                    continue
                log.warning(  # running: too late to stop; the broker may run it again
                    "lease on running job %s ran out %.1f s before it was extended",
                    job.envelope.id,
                    at - job.lease_until,
                    extra=job_fields(job.envelope, job.attempt),
                )
            what = f"extend the lease of {job.delivery.id}"
            try:
                transport.extend(job.delivery, lease=self.lease)
            except BrokerUnavailable as exc:
                self._streak.failed(what, exc, time.monotonic())
                return
            except JobkitError as exc:
                log.error("could not %s: %s", what, exc)
                continue
            self._streak.succeeded(what, time.monotonic())
            job.lease_until = at + lease  # the new lease starts no earlier than the call
