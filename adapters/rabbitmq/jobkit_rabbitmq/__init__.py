"""jobkit on RabbitMQ (pika): ``amqp://`` and ``amqps://`` URLs, driven by jobkit's own worker.

    amqp://user:pass@host:5672/vhost?queue_type=quorum&heartbeat=10&store=sqlite:///jobs.db

See docs/adapters/rabbitmq.md for the options, the capabilities and the known differences, and
`jobkit_rabbitmq.transport` for how leases, delays and counting work on AMQP.
"""

from __future__ import annotations

from jobkit import ConfigurationError
from jobkit.spi import (
    JobSet,
    JobStore,
    MemoryJobStore,
    SqliteJobStore,
    TransportBackend,
    redact_url,
)
from jobkit_rabbitmq._time_limit import hold_bound
from jobkit_rabbitmq.config import RabbitConfig, parse_url
from jobkit_rabbitmq.transport import RabbitTransport, capabilities_for

__all__ = [
    "RabbitBackend",
    "RabbitConfig",
    "RabbitTransport",
    "backend_from_url",
    "capabilities_for",
    "parse_url",
]


class RabbitBackend(TransportBackend):
    """`TransportBackend` whose `check` also refuses what RabbitMQ's `consumer_timeout` would
    break: a time limit the server would cut short by handing the job to a second worker.

    Without a job store its workers share (``store=memory``, the default), its capabilities
    claim neither idempotency keys nor results, so a key is refused at enqueue and `job_record`
    raises, both with `UnsupportedFeature` naming ``store=sqlite:///...``: a worker could not
    tell that another completed a key, and nobody could read another process's results."""

    def __init__(self, transport: RabbitTransport, store: JobStore) -> None:
        self.bound = hold_bound(transport.config)
        super().__init__(transport, store, default_lease=self.bound)

    def check(self, app: JobSet) -> list[str]:
        problems = super().check(app)
        timeout = self.transport.config.consumer_timeout  # type: ignore[attr-defined]
        for job in app.jobs.values():
            if job.time_limit is not None and job.time_limit > self.bound:
                problems.append(
                    f"job {job.name!r}: time limit {job.time_limit} exceeds {self.bound}, what "
                    f"RabbitMQ's consumer_timeout ({timeout}) lets a delivery be held; past it "
                    "the broker hands the job to another worker while it still runs. Lower "
                    "the time limit, or raise consumer_timeout on the server and in the URL"
                )
        return problems


def backend_from_url(url: str) -> RabbitBackend:
    """The `jobkit.backends` entry point for the ``amqp`` and ``amqps`` schemes."""
    config = parse_url(url)
    store, shared = open_store(config, url)
    return RabbitBackend(RabbitTransport(config, results=shared), store)


def open_store(config: RabbitConfig, url: str) -> tuple[JobStore, bool]:
    """The job store of the ``store=`` option and whether other processes share it: ``memory``
    (default; per process, done keys only, so keys and `job_record` are refused, see
    `RabbitBackend`) or ``sqlite:///path`` (shared by the processes of one machine)."""
    if config.store == "memory":
        return MemoryJobStore(retention=config.retention, records=False), False
    if config.store.startswith("sqlite:///") and len(config.store) > len("sqlite:///"):
        return SqliteJobStore(config.store[len("sqlite:///") :], retention=config.retention), True
    raise ConfigurationError(
        f"{redact_url(url)!r}: store={config.store!r} is not supported; use store=memory or "
        "store=sqlite:///path/to/jobs.db"
    )
