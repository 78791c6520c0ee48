"""The receiver thread: leases messages into the buffer, screening each one first (`_screen`:
what cannot run is dead-lettered or released for another worker, duplicates of succeeded keys
are acked)."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from jobkit.errors import JobkitError
from jobkit.records import Delivery
from jobkit.transport import Transport
from jobkit.worker._buffer import Buffer
from jobkit.worker._pool import Running
from jobkit.worker._retrying import Retrier, Stopped, connect
from jobkit.worker._screen import Screen

if TYPE_CHECKING:
    from jobkit.backend import WorkerOptions
    from jobkit.worker._served import ServedBackend

log = logging.getLogger(__name__)


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
        screener: Screen,
        on_lapsed: Callable[[list[Running], float], None],
    ) -> None:
        super().__init__(name="jobkit-receiver", daemon=True)
        self.backend = backend
        self.options = options
        self.buffer = buffer
        self.stop = stop
        self.wake = wake
        self.on_crash = on_crash
        self.screener = screener
        self.on_lapsed = on_lapsed  # `Leases.dropped`
        self.queues_empty = threading.Event()
        self.retry = Retrier(stop)  # every broker and store call: retried through outages
        # While jobs wait in the buffer, lease in batches of at least this many (see
        # `Transport.receive_batch`).
        self.batch = max(1, min(backend.transport.receive_batch, buffer.capacity))

    def run(self) -> None:
        transport = self.backend.transport.clone()
        connect("connect to the broker to receive", transport.connect)
        try:
            while not self.stop.is_set():
                if not self.buffer.wait_for_room(0.2, batch=self.batch):
                    continue
                leased_at = time.monotonic()  # the lease starts no later than the call
                try:
                    deliveries = self.retry.call(
                        "receive",
                        functools.partial(
                            transport.receive,
                            self.options.queues,
                            max_messages=min(self.buffer.room(), 100),
                            wait=self.options.poll,
                            lease=self.options.lease,
                        ),
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
                if deliveries[0].leased_until is not None:  # timed leases
                    # A buffered copy of a message received again has lapsed: dropped (and
                    # noted, so the new copy's attempt leaves it out) before it is screened.
                    now = time.monotonic()
                    self.on_lapsed(self.buffer.drop_lapsed(now), now)
                try:
                    runnable = self.screen(transport, deliveries, leased_at)
                except JobkitError as exc:  # not transient: those leases lapse, then redelivery
                    log.error("could not screen %d messages: %s", len(deliveries), exc)
                    continue
                if runnable:
                    self.buffer.add(runnable)
                    self.wake()
        except Stopped:
            pass  # stopping while the broker is away: what is leased comes back after its lease
        except Exception:  # pragma: no cover - a bug: stop the worker rather than hang
            log.exception("receiver thread crashed; stopping the worker")
            self.on_crash()
        finally:
            transport.close()

    def screen(
        self, transport: Transport, deliveries: list[Delivery], leased_at: float
    ) -> list[Running]:
        return self.screener.screen(
            transport,
            deliveries,
            leased_at + self.options.lease.total_seconds(),
            call=self.retry.call,
        )
