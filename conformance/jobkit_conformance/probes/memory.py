"""The probe for ``memory://``: the broker is the `MemoryTransport` inside the harness's backend,
so the probe reads that transport directly (below the `Backend` layer under test)."""

from __future__ import annotations

from collections.abc import Sequence

from jobkit import ConfigurationError
from jobkit.spi import Backend, Message, Transport, TransportBackend
from jobkit_conformance.probes import DeadEntry


class MemoryProbe:
    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def depth(self, queue: str) -> int:
        (s,) = self.transport.stats([queue])
        return s.ready + s.in_flight + s.delayed

    def dead(self, queue: str) -> list[DeadEntry]:
        return [
            DeadEntry(id=d.id, body=d.body, reason=d.reason)
            for d in self.transport.dead_letters(queue, limit=10_000)
        ]

    def inject_raw(self, queue: str, body: bytes, *, id: str) -> None:
        self.transport.send([Message(queue=queue, body=body, id=id)])

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(
            s.ready + s.in_flight + s.delayed + s.dead == 0 for s in self.transport.stats(queues)
        )

    def cleanup(self, queues: Sequence[str]) -> None:
        for q in queues:
            self.transport.purge(q)

    def unreachable_url(self) -> str | None:
        return None

    def close(self) -> None:
        pass


def probe_from_url(url: str, backend: Backend) -> MemoryProbe:
    if not isinstance(backend, TransportBackend):
        raise ConfigurationError(f"the memory probe needs a TransportBackend, got {backend!r}")
    return MemoryProbe(backend.transport)
