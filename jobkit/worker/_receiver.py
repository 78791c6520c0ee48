"""The receiver thread: leases messages into the buffer, screening each one first.

Screening dead-letters what must never run (an undecodable body; a message delivered more times
than its max attempts because earlier attempts died with their process) and acks duplicates
whose key already succeeded according to the job store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobkit.envelope import decode
from jobkit.errors import JobkitError, SerializationError
from jobkit.records import Delivery
from jobkit.store import EventKind, JobEvent
from jobkit.transport import Transport
from jobkit.worker._buffer import Buffer, key_of
from jobkit.worker._pool import Running

if TYPE_CHECKING:
    from jobkit.backend import WorkerOptions
    from jobkit.worker._served import ServedBackend

log = logging.getLogger("jobkit.worker")

_MIN_BATCH = 10


class Receiver(threading.Thread):
    """Runs until `stop` is set. Uses its own transport instance. Calls `wake` after each
    batch (and when the queues were found empty, setting `queues_empty`)."""

    def __init__(
        self,
        backend: ServedBackend,
        options: WorkerOptions,
        buffer: Buffer,
        stop: threading.Event,
        wake: Callable[[], None],
        on_crash: Callable[[], None],
    ) -> None:
        super().__init__(name="jobkit-receiver", daemon=True)
        self.backend = backend
        self.options = options
        self.buffer = buffer
        self.stop = stop
        self.wake = wake
        self.on_crash = on_crash
        self.queues_empty = threading.Event()
        # While jobs wait in the buffer, lease in batches of at least this many: one broker
        # round trip per message would cost more than the job on brokers like SQS.
        self.batch = min(_MIN_BATCH, buffer.capacity)

    def run(self) -> None:
        transport = self.backend.transport.clone()
        try:
            while not self.stop.is_set():
                if not self.buffer.wait_for_room(0.2, batch=self.batch):
                    continue
                leased_at = time.monotonic()  # the lease starts no later than the call
                try:
                    deliveries = transport.receive(
                        self.options.queues,
                        max_messages=min(self.buffer.room(), 100),
                        wait=self.options.poll,
                        lease=self.options.lease,
                    )
                except JobkitError as exc:
                    log.error("receive failed, retrying in 1 s: %s", exc)
                    self.stop.wait(1.0)
                    continue
                if not deliveries:
                    self.queues_empty.set()
                    self.wake()
                    continue
                self.queues_empty.clear()
                runnable = self.screen(transport, deliveries, leased_at)
                if runnable:
                    self.buffer.add(runnable)
                    self.wake()
        except Exception:  # pragma: no cover - a bug: stop the worker rather than hang
            log.exception("receiver thread crashed; stopping the worker")
            self.on_crash()
        finally:
            transport.close()

    def screen(
        self, transport: Transport, deliveries: list[Delivery], leased_at: float
    ) -> list[Running]:
        store = self.backend.store
        now = self.backend.clock.now()
        expires = leased_at + self.options.lease.total_seconds()
        candidates: list[Running] = []
        events: list[JobEvent] = []
        for delivery in deliveries:
            try:
                envelope = decode(delivery.body)
            except SerializationError as exc:
                log.error("message %s on %s does not decode: %s", delivery.id, delivery.queue, exc)
                transport.dead_letter(delivery, reason=f"undecodable: {exc}")
                continue
            attempt = envelope.attempt + delivery.deliveries
            if attempt > envelope.max_attempts:
                reason = (
                    f"delivered {attempt} times, over max attempts {envelope.max_attempts}: "
                    "earlier attempts ended without an outcome (process killed or lease lost)"
                )
                events.append(
                    JobEvent(
                        job_id=envelope.id,
                        job=envelope.job,
                        kind=EventKind.DEAD,
                        attempt=attempt,
                        at=now,
                        error=reason,
                    )
                )
                store.record(events)
                events = []
                transport.dead_letter(delivery, reason=reason)
                continue
            candidates.append(
                Running(delivery=delivery, envelope=envelope, attempt=attempt, lease_until=expires)
            )
        keys = [key_of(job) for job in candidates]
        done = store.done(keys) if keys else set()
        duplicates = [job for key, job in zip(keys, candidates, strict=True) if key in done]
        if duplicates:
            store.record(
                [
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
            )
            transport.ack([job.delivery for job in duplicates])
        return [job for key, job in zip(keys, candidates, strict=True) if key not in done]
