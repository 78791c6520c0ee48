"""The helpers every transport contract test uses (see the package docstring)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from jobkit.spi import DeadLetter, Delivery, Message, QueueStats, Transport
from tests.waiting import wait_until

LONG = timedelta(seconds=60)
QUEUE_NAMES = ("main", "a", "b", "listed", "never-used")
"""Every name the tests pass to `q()`; `prepare` receives them all, prefixed."""


class ContractBase:
    short: timedelta = timedelta(seconds=1)
    ordered: bool = True
    poll_timeout: float = 15.0

    # -- to be provided by the subclass ------------------------------------------------------

    def make_transport(self) -> Transport:
        raise NotImplementedError

    def lapse(self, delta: timedelta) -> None:
        raise NotImplementedError

    def prepare(self, transport: Transport, queues: Sequence[str]) -> None:
        """Create `queues` on brokers that need queues declared first. Default: nothing."""

    def now(self) -> datetime:
        """The transport's current time (override when the transport runs on a ManualClock)."""
        return datetime.now(UTC)

    # -- fixtures and helpers ----------------------------------------------------------------

    @pytest.fixture
    def transport(self) -> Iterator[Transport]:
        transport = self.make_transport()
        self.prepare(transport, [self.q(name) for name in QUEUE_NAMES])
        try:
            yield transport
        finally:
            transport.close()

    @pytest.fixture(autouse=True)
    def _queue_prefix(self) -> None:
        self._prefix = f"t{uuid.uuid4().hex[:10]}"

    def q(self, name: str = "main") -> str:
        return f"{self._prefix}-{name}"

    def send(
        self,
        transport: Transport,
        bodies: Sequence[bytes | str],
        *,
        queue: str | None = None,
        delay: timedelta = timedelta(0),
        priority: int = 0,
    ) -> list[str]:
        ids = []
        messages = []
        for body in bodies:
            ids.append(uuid.uuid4().hex)
            raw = body.encode() if isinstance(body, str) else body
            messages.append(
                Message(
                    queue=queue or self.q(),
                    body=raw,
                    id=ids[-1],
                    delay=delay,
                    priority=priority,
                )
            )
        transport.send(messages)
        return ids

    def receive(
        self,
        transport: Transport,
        *,
        queues: Sequence[str] | None = None,
        max_messages: int = 10,
        lease: timedelta = LONG,
    ) -> list[Delivery]:
        return transport.receive(
            list(queues or [self.q()]), max_messages=max_messages, wait=timedelta(0), lease=lease
        )

    def receive_n(
        self,
        transport: Transport,
        n: int,
        *,
        queues: Sequence[str] | None = None,
        lease: timedelta = LONG,
    ) -> list[Delivery]:
        """Receive until `n` deliveries arrived (fails after `poll_timeout` s)."""
        got: list[Delivery] = []

        def more() -> bool:
            got.extend(
                transport.receive(
                    list(queues or [self.q()]),
                    max_messages=n - len(got),
                    wait=timedelta(seconds=0.2),
                    lease=lease,
                )
            )
            return len(got) >= n

        wait_until(more, timeout=self.poll_timeout, interval=0.0, what=f"{n} deliveries")
        assert len(got) == n
        return got

    def assert_nothing_due_before(self, transport: Transport, deadline: datetime) -> None:
        """Receive once; if the transport's clock is still before `deadline` afterwards, the
        receive must have returned nothing (a stalled machine cannot make this fail)."""
        got = self.receive(transport)
        if self.now() < deadline:
            assert got == [], f"delivered before it was due: {got}"

    def stats_of(self, transport: Transport, queue: str) -> QueueStats:
        (stats,) = transport.stats([queue])
        return stats

    def dead(self, transport: Transport, queue: str | None = None) -> list[DeadLetter]:
        return transport.dead_letters(queue or self.q())

    # -- send / receive ----------------------------------------------------------------------
