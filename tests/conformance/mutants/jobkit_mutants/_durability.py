"""Broken backends for the durability, broker-restart, outage and contract checks.

Each passed the suite as it was before those checks (or was caught only by accident, with a
message about something else), and each breaks one promise of `jobkit.Transport`:

* ``mutant-lingering-send``: `send` returns before the messages are stored; a thread writes
  them 0.2 s later (a producer "linger"): a producer killed right after enqueue loses them;
* ``mutant-stats-no-in-flight``: `stats` counts leased messages as ready, none in flight;
* ``mutant-in-flight-as-ready``: the same, declaring that its in-flight counts are not
  visible (`Capabilities.in_flight_visible` False), which allows counting them nowhere, never
  as ready;
* ``mutant-extra-message``: `receive` returns one message more than `max_messages` when asked
  for 3 or more (an off-by-one in batching: the worker asks for fewer and never sees it);
* ``mutant-ignores-wait``: `receive` never blocks, whatever `wait` says;
* ``mutant-caps-extend``: `extend` caps the lease at 2 s (the suite's workers ask for 2 s);
* ``mutant-dlq-no-limit``: `dead_letters` ignores `limit`;
* ``mutant-peek-takes``: `peek` looks by receiving and releasing, which counts a delivery;
* ``mutant-volatile``: claims `survives_broker_restart` but its "broker" forgets every queued
  message when it restarts (see `jobkit_mutants._control`, the self-test's broker control);
* ``mutant-drops-when-down``: while its "broker" is stopped, `send` returns without storing
  anything instead of raising `BrokerUnavailable`.

``sim-broker+sqlite`` is no mutant: the same simulated broker (down while stopped, keeping its
data), for proving that a correct backend passes the restart and outage checks.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from jobkit import BrokerUnavailable, ConfigurationError
from jobkit.spi import (
    Capabilities,
    DeadLetter,
    Delivery,
    Message,
    QueueStats,
    Transport,
    TransportBackend,
    open_backend,
)
from jobkit_mutants import Wrapped, _wrap
from jobkit_mutants._control import SimulatedBroker

LINGER = 0.2  # seconds a sent message waits in memory before it is stored


class LingeringSend(Wrapped):
    name = "mutant-lingering-send"

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self._pending: list[Message] = []
        self._lock = threading.Lock()
        self._flusher: threading.Timer | None = None

    def send(self, messages: Sequence[Message]) -> None:
        with self._lock:
            self._pending += messages
            if self._flusher is None:
                self._flusher = threading.Timer(LINGER, self.flush)
                self._flusher.daemon = True
                self._flusher.start()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending, self._flusher = self._pending, [], None
            if pending:
                self.inner.send(pending)

    def close(self) -> None:
        self.flush()
        super().close()


class StatsNoInFlight(Wrapped):
    name = "mutant-stats-no-in-flight"

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return [
            replace(s, ready=s.ready + s.in_flight, in_flight=0) for s in self.inner.stats(queues)
        ]


class InFlightAsReady(StatsNoInFlight):
    name = "mutant-in-flight-as-ready"

    @property
    def capabilities(self) -> Capabilities:
        return replace(self.inner.capabilities, name=self.name, in_flight_visible=False)


class ExtraMessage(Wrapped):
    name = "mutant-extra-message"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        asked = max_messages + 1 if max_messages >= 3 else max_messages
        return self.inner.receive(queues, max_messages=asked, wait=wait, lease=lease)


class IgnoresWait(Wrapped):
    name = "mutant-ignores-wait"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        return self.inner.receive(queues, max_messages=max_messages, wait=timedelta(0), lease=lease)


class CapsExtend(Wrapped):
    name = "mutant-caps-extend"

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self.inner.extend(delivery, lease=min(lease, timedelta(seconds=2)))


class DlqNoLimit(Wrapped):
    name = "mutant-dlq-no-limit"

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(queue, limit=10_000)


class PeekTakes(Wrapped):
    name = "mutant-peek-takes"

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        got = self.inner.receive(
            queues, max_messages=limit, wait=timedelta(0), lease=timedelta(seconds=30)
        )
        for d in got:
            self.inner.release(d)
        return [d.body for d in got]


class OnSimulatedBroker(Wrapped):
    """Every call first asks the simulated broker whether it is up (and lets it forget what a
    volatile broker forgets on restart)."""

    name = "sim-broker"

    def __init__(self, inner: Transport, broker: SimulatedBroker) -> None:
        super().__init__(inner)
        self.broker = broker

    @property
    def capabilities(self) -> Capabilities:
        return replace(self.inner.capabilities, name=self.name, survives_broker_restart=True)

    def _up(self) -> None:
        if not self.broker.up():
            raise BrokerUnavailable(f"{self.name}: the simulated broker is stopped")

    def clone(self) -> Transport:
        return type(self)(self.inner.clone(), self.broker)

    def send(self, messages: Sequence[Message]) -> None:
        self._up()
        super().send(messages)

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        self._up()
        return super().receive(queues, max_messages=max_messages, wait=wait, lease=lease)

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._up()
        super().ack(deliveries)

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._up()
        super().release(delivery, delay=delay)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        self._up()
        super().dead_letter(delivery, reason=reason)

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self._up()
        super().extend(delivery, lease=lease)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        self._up()
        return super().stats(queues)


class Volatile(OnSimulatedBroker):
    name = "mutant-volatile"

    def __init__(self, inner: Transport, broker: SimulatedBroker) -> None:
        super().__init__(inner, broker)
        broker.mark_volatile()


class DropsWhenDown(OnSimulatedBroker):
    name = "mutant-drops-when-down"

    def send(self, messages: Sequence[Message]) -> None:
        if self.broker.up():
            super().send(messages)


def _on_broker(url: str, kind: type[OnSimulatedBroker]) -> TransportBackend:
    _scheme, sep, inner_url = url.partition("+")
    inner = open_backend(inner_url)
    if not sep or not isinstance(inner, TransportBackend):
        raise ConfigurationError(f"{url!r}: write {kind.name}+sqlite:///PATH")
    broker = SimulatedBroker.for_url(inner_url)
    return TransportBackend(
        kind(inner.transport, broker),
        inner.store,
        clock=inner.clock,
        default_lease=inner.default_lease,
    )


def lingering_send(url: str) -> TransportBackend:
    return _wrap(url, LingeringSend)


def stats_no_in_flight(url: str) -> TransportBackend:
    return _wrap(url, StatsNoInFlight)


def in_flight_as_ready(url: str) -> TransportBackend:
    return _wrap(url, InFlightAsReady)


def extra_message(url: str) -> TransportBackend:
    return _wrap(url, ExtraMessage)


def ignores_wait(url: str) -> TransportBackend:
    return _wrap(url, IgnoresWait)


def caps_extend(url: str) -> TransportBackend:
    return _wrap(url, CapsExtend)


def dlq_no_limit(url: str) -> TransportBackend:
    return _wrap(url, DlqNoLimit)


def peek_takes(url: str) -> TransportBackend:
    return _wrap(url, PeekTakes)


def sim_broker(url: str) -> TransportBackend:
    return _on_broker(url, OnSimulatedBroker)


def volatile(url: str) -> TransportBackend:
    return _on_broker(url, Volatile)


def drops_when_down(url: str) -> TransportBackend:
    return _on_broker(url, DropsWhenDown)
