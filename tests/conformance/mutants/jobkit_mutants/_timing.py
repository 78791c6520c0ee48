"""Broken backends the suite passed before it counted volume, lateness and recovery time.

* "loses rarely": each message sent is dropped with probability 1/300, at random;
* "late delays": every delay (delayed jobs, retry backoffs) is 5 s longer than asked;
* "slow redelivery": every lease is 10 times what the worker asked for, so a crashed job runs
  again only after ten leases (the worker's extensions stretch it the same way).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from jobkit.spi import Delivery, Message, Transport, TransportBackend
from jobkit_mutants import Wrapped, _wrap

LOSS_RATE = 1 / 300
LATE_BY = timedelta(seconds=5)
LEASE_FACTOR = 10


class LosesRarely(Wrapped):
    """Drops each sent message with probability `LOSS_RATE`, without an error."""

    name = "mutant-loses-rarely"

    def __init__(self, inner: Transport) -> None:
        super().__init__(inner)
        self.rng = random.Random()

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([m for m in messages if self.rng.random() >= LOSS_RATE])


class LateDelays(Wrapped):
    """Makes every delay `LATE_BY` longer: delayed jobs and retries run late."""

    name = "mutant-late-delays"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([replace(m, delay=m.delay + LATE_BY) if m.delay else m for m in messages])

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.release(delivery, delay=delay + LATE_BY if delay else delay)


class SlowRedelivery(Wrapped):
    """Leases `LEASE_FACTOR` times longer than asked: a crashed job waits ten leases."""

    name = "mutant-slow-redelivery"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        return self.inner.receive(
            queues, max_messages=max_messages, wait=wait, lease=lease * LEASE_FACTOR
        )

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self.inner.extend(delivery, lease=lease * LEASE_FACTOR)


def loses_rarely(url: str) -> TransportBackend:
    return _wrap(url, LosesRarely)


def late_delays(url: str) -> TransportBackend:
    return _wrap(url, LateDelays)


def slow_redelivery(url: str) -> TransportBackend:
    return _wrap(url, SlowRedelivery)
