"""jobkit on Dramatiq's brokers: ``dramatiq+redis://`` and ``dramatiq+amqp://`` backends.

jobkit jobs travel as Dramatiq messages for actors named after the jobs; ``jobkit worker`` runs
them with jobkit's semantics on Dramatiq's queues (hardened: deterministic crash recovery, poison
messages dead-lettered with a reason, hard time limits), and `install` declares them as Dramatiq
actors for a plain ``dramatiq`` worker. See docs/adapters/dramatiq.md.
"""

from __future__ import annotations

from jobkit import ConfigurationError
from jobkit.spi import (
    JobStore,
    MemoryJobStore,
    SqliteJobStore,
    Transport,
    TransportBackend,
)
from jobkit_dramatiq.actors import declare_actors, install, native_broker
from jobkit_dramatiq.config import DramatiqConfig, parse_url

__all__ = [
    "DramatiqBackend",
    "DramatiqConfig",
    "backend_from_url",
    "declare_actors",
    "install",
    "native_broker",
    "parse_url",
    "transport_for",
]


class DramatiqBackend(TransportBackend):
    """`TransportBackend` on a Dramatiq transport, keeping the parsed URL. With ``store=memory``
    (per worker process) its capabilities claim neither idempotency keys nor results, so a key
    is refused at enqueue naming ``store=sqlite:///...``: two workers would each run the job."""

    def __init__(self, transport: Transport, store: JobStore, *, config: DramatiqConfig) -> None:
        super().__init__(transport, store)
        self.config = config


def backend_from_url(url: str) -> DramatiqBackend:
    """The `jobkit.backends` entry point for ``dramatiq+redis`` and ``dramatiq+amqp``."""
    config = parse_url(url)
    store, shared = open_store(config)
    return DramatiqBackend(transport_for(config, results=shared), store, config=config)


def transport_for(config: DramatiqConfig, *, results: bool) -> Transport:
    if config.broker == "redis":
        from jobkit_dramatiq.redis_transport import RedisTransport

        return RedisTransport(config, results=results)
    from jobkit_dramatiq.amqp_transport import AmqpTransport

    return AmqpTransport(config, results=results)


def open_store(config: DramatiqConfig) -> tuple[JobStore, bool]:
    """The job store named by ``store=``, and whether other processes share it: ``memory``
    (per process, done keys only: no results, and idempotency keys are per worker process) or
    ``sqlite:///path`` (shared by the processes of one machine)."""
    if config.store == "memory":
        return MemoryJobStore(retention=config.retention, records=False), False
    if config.store.startswith("sqlite:///") and len(config.store) > len("sqlite:///"):
        return SqliteJobStore(config.store[len("sqlite:///") :], retention=config.retention), True
    raise ConfigurationError(
        f"{config.shown!r}: store={config.store!r} is not supported; use store=memory or "
        "store=sqlite:///path/to/jobs.db"
    )
