"""Probes: read a backend's queues through its native client, bypassing the adapter under test.

A distribution provides a probe for a URL scheme through the ``jobkit.probes`` entry-point group
(name = scheme, value = "module:function"). The function takes the backend URL, and optionally
as second argument the backend the harness opened (needed only where the broker lives in that
process, as for ``memory://``), and returns a `Probe`.

Lookup: the exact scheme first, then the part after the last ``+`` (so a wrapping scheme such
as ``mutant-acks-early+sqlite`` finds the ``sqlite`` probe), then the part before the first ``+``.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Protocol, cast

from jobkit import ConfigurationError
from jobkit.spi import Backend, scheme_of

GROUP = "jobkit.probes"


@dataclass(frozen=True, kw_only=True)
class DeadEntry:
    id: str
    body: bytes
    reason: str


class Probe(Protocol):
    """Reads queues natively. Thread-safe: the harness calls it from several scenarios."""

    def depth(self, queue: str) -> int:
        """Messages of `queue` not yet acknowledged: ready, delayed and in flight (not dead)."""
        ...

    def dead(self, queue: str) -> list[DeadEntry]:
        """The dead-letter queue of `queue`, oldest first, unchanged."""
        ...

    def inject_raw(self, queue: str, body: bytes, *, id: str) -> None:
        """Put `body` on `queue` as the broker's own producers would, bypassing jobkit."""
        ...

    def is_empty(self, queues: Sequence[str]) -> bool:
        """True if none of `queues` (nor their dead-letter queues) holds a message."""
        ...

    def cleanup(self, queues: Sequence[str]) -> None:
        """Delete every message of `queues` and their dead-letter queues."""
        ...

    def unreachable_url(self) -> str | None:
        """A URL of this backend kind whose broker cannot be reached (None if there is no
        broker to be unreachable, as for ``memory://``)."""
        ...

    def close(self) -> None: ...


ProbeFactory = Callable[[str, Backend], Probe]


def _takes_backend(factory: Callable[..., Probe]) -> bool:
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in params)


def open_probe(url: str, backend: Backend) -> Probe:
    scheme = scheme_of(url)
    probes = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for candidate in (scheme, scheme.rsplit("+", 1)[-1], scheme.split("+", 1)[0]):
        target = probes.get(candidate)
        if target is not None:
            module_name, _, attr = target.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
            if _takes_backend(factory):
                return cast(ProbeFactory, factory)(url, backend)
            return cast(Callable[[str], Probe], factory)(url)
    raise ConfigurationError(
        f"no conformance probe for scheme {scheme!r}; installed probes: "
        f"{', '.join(sorted(probes)) or 'none'}. The adapter's distribution must declare one "
        f'under [project.entry-points."{GROUP}"]'
    )
