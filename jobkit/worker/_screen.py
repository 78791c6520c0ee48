"""Screening a freshly leased batch: settle here whatever must not (or cannot yet) run.

For each delivery, in order:

- a body that does not decode (not JSON, a missing or wrong-typed field, an old or unknown
  envelope version) is dead-lettered with the reason, and recorded DEAD under the job id read
  leniently from the body (else the broker's message id), so its handle reports it;
- an envelope from a newer jobkit, or a job name this app does not define, is not dead-lettered
  at once (during a rolling deploy another worker may know it): it is released without counting
  an attempt, after a delay, with a warning each time; once it has waited `unknown_job_timeout`
  since it became due (`not_before`, else `enqueued_at`) it is dead-lettered and recorded DEAD;
- a message delivered more times than its max attempts (earlier attempts died with their
  process) is dead-lettered and recorded DEAD;
- a duplicate of a key that already succeeded (per the job store) is recorded SKIPPED and acked.

What remains is returned to be buffered. Thread-safe if the store is (it keeps no state of its own).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from jobkit.envelope import Envelope, UnsupportedEnvelopeVersion, decode, salvage
from jobkit.errors import SerializationError
from jobkit.records import Delivery
from jobkit.store import EventKind, JobEvent, JobStore
from jobkit.transport import Transport
from jobkit.worker._buffer import key_of
from jobkit.worker._leases import Unstarted
from jobkit.worker._pool import Running

log = logging.getLogger(__name__)

T = TypeVar("T")
Call = Callable[[str, Callable[[], Any]], Any]
"""How a broker or store call is made: `call(what, fn)` (the receiver retries through outages)."""


def _direct(what: str, fn: Callable[[], T]) -> T:
    return fn()


UNKNOWN_JOB_RETRY = timedelta(seconds=30)
"""How long a message this worker cannot run waits before it is offered again."""
_SHORTEST_RETRY = timedelta(seconds=1)
UNNAMED_JOB = "(unknown)"


@dataclass(frozen=True, kw_only=True)
class Screen:
    """`known` is the set of job names this app defines; `timeout` is how long a job nobody
    here knows may wait for a worker that knows it (see `WorkerOptions.unknown_job_timeout`)."""

    store: JobStore
    known: frozenset[str]
    timeout: timedelta
    now: Callable[[], datetime]
    unstarted: Unstarted = field(default_factory=Unstarted)  # shared with `Leases`

    def screen(
        self,
        transport: Transport,
        deliveries: list[Delivery],
        lease_until: float,
        *,
        call: Call = _direct,
    ) -> list[Running]:
        """Settle what must not run now; return the rest. Every broker and store call goes
        through `call` (the receiver passes its `Retrier.call`)."""
        now = self.now()
        candidates: list[Running] = []
        for delivery in deliveries:
            envelope = self._decode(transport, delivery, now, call)
            if envelope is None:
                continue
            attempt = max(1, envelope.attempt + delivery.deliveries - self.unstarted.of(delivery))
            if envelope.job not in self.known:
                self._unknown(
                    transport,
                    delivery,
                    now,
                    call,
                    job_id=envelope.id,
                    job=envelope.job,
                    since=envelope.not_before or envelope.enqueued_at,
                    what=f"job {envelope.job!r} is not defined in this app",
                )
            elif attempt > envelope.max_attempts:
                self._dead(
                    transport,
                    call,
                    delivery,
                    envelope.id,
                    envelope.job,
                    attempt,
                    now,
                    f"delivered {attempt} times, over max attempts {envelope.max_attempts}: "
                    "earlier attempts ended without an outcome (process killed or lease lost)",
                )
            else:
                candidates.append(
                    Running(
                        delivery=delivery,
                        envelope=envelope,
                        attempt=attempt,
                        lease_until=lease_until,
                    )
                )
        return self._drop_done(transport, candidates, now, call)

    def _decode(
        self, transport: Transport, delivery: Delivery, now: datetime, call: Call
    ) -> Envelope | None:
        try:
            return decode(delivery.body)
        except UnsupportedEnvelopeVersion as exc:
            found = salvage(delivery.body)
            self._unknown(
                transport,
                delivery,
                now,
                call,
                job_id=found.id or delivery.id,
                job=found.job or UNNAMED_JOB,
                since=found.since,
                what=str(exc),
            )
        except SerializationError as exc:
            found = salvage(delivery.body)
            log.error("message %s on %s does not decode: %s", delivery.id, delivery.queue, exc)
            self._dead(
                transport,
                call,
                delivery,
                found.id or delivery.id,
                found.job or UNNAMED_JOB,
                delivery.deliveries,
                now,
                f"undecodable: {exc}",
            )
        return None

    def _unknown(
        self,
        transport: Transport,
        delivery: Delivery,
        now: datetime,
        call: Call,
        *,
        job_id: str,
        job: str,
        since: datetime | None,
        what: str,
    ) -> None:
        waited = now - since if since is not None else None
        if waited is None or waited >= self.timeout:
            how_long = f"{waited}" if waited is not None else "an unknown time"
            self._dead(
                transport,
                call,
                delivery,
                job_id,
                job,
                delivery.deliveries,
                now,
                f"no worker could run it for {how_long} (unknown-job timeout {self.timeout}): "
                f"{what}",
            )
            return
        delay = max(min(UNKNOWN_JOB_RETRY, self.timeout - waited), _SHORTEST_RETRY)
        log.warning(
            "message %s (job %s) on %s: %s; released for a worker that can run it, again in "
            "%s (dead-lettered once it has waited %s; it has waited %s)",
            delivery.id,
            job_id,
            delivery.queue,
            what,
            delay,
            self.timeout,
            waited,
        )
        call(
            f"release message {delivery.id}",
            functools.partial(transport.release_uncounted, delivery, delay=delay),
        )

    def _dead(
        self,
        transport: Transport,
        call: Call,
        delivery: Delivery,
        job_id: str,
        job: str,
        attempt: int,
        now: datetime,
        reason: str,
    ) -> None:
        """Record DEAD first, then move the message: a handle never waits on a dead job."""
        log.error("dead-lettering message %s (job %s): %s", delivery.id, job_id, reason)
        event = JobEvent(
            job_id=job_id, job=job, kind=EventKind.DEAD, attempt=attempt, at=now, error=reason
        )
        call("record job events", functools.partial(self.store.record, [event]))
        call(
            f"dead-letter message {delivery.id}",
            functools.partial(transport.dead_letter, delivery, reason=reason),
        )

    def _drop_done(
        self, transport: Transport, candidates: list[Running], now: datetime, call: Call
    ) -> list[Running]:
        keys = [key_of(job) for job in candidates]
        done: set[str] = (
            call("look up done keys", functools.partial(self.store.done, keys)) if keys else set()
        )
        if not done:
            return candidates
        duplicates = [job for key, job in zip(keys, candidates, strict=True) if key in done]
        skipped = [
            JobEvent(
                job_id=job.envelope.id,
                job=job.envelope.job,
                kind=EventKind.SKIPPED,
                attempt=job.attempt,
                at=now,
                key=job.envelope.idempotency_key,
            )
            for job in duplicates
        ]
        call("record job events", functools.partial(self.store.record, skipped))
        call(
            f"ack {len(duplicates)} duplicates",
            functools.partial(transport.ack, [job.delivery for job in duplicates]),
        )
        return [job for key, job in zip(keys, candidates, strict=True) if key not in done]
