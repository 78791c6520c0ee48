"""What jobkit's worker needs of the backend it serves (a `TransportBackend`), as a protocol, so
the worker does not import the backend that starts it."""

from __future__ import annotations

from typing import Protocol

from jobkit.capabilities import Capabilities
from jobkit.clock import Clock
from jobkit.store import JobStore
from jobkit.transport import Transport


class ServedBackend(Protocol):
    @property
    def transport(self) -> Transport: ...

    @property
    def store(self) -> JobStore: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def capabilities(self) -> Capabilities: ...
