"""jobkit on Amazon SQS (boto3): ``sqs://`` URLs, driven by jobkit's own worker.

    sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:5000&prefix=jobkit-&store=sqlite:///jobs.db

See docs/adapters/sqs.md for the options, the capabilities and the known differences.
"""

from __future__ import annotations

from datetime import timedelta

from jobkit import ConfigurationError
from jobkit.spi import JobStore, MemoryJobStore, Retention, TransportBackend, redact_url
from jobkit_sqs.config import SqsConfig, parse_url
from jobkit_sqs.dynamodb import DynamoJobStore, parse_dynamodb_url
from jobkit_sqs.transport import SqsTransport, capabilities_for

__version__ = "0.1.0"

__all__ = [
    "DynamoJobStore",
    "SqsConfig",
    "SqsTransport",
    "backend_from_url",
    "capabilities_for",
    "parse_url",
]


def backend_from_url(url: str) -> TransportBackend:
    """The `jobkit.backends` entry point for the ``sqs`` scheme."""
    config = parse_url(url)
    store, shared = open_store(config.store, url, retention=config.retention)
    transport = SqsTransport(config, results=shared, store=store if shared else None)
    return TransportBackend(
        transport, store, default_lease=max(config.visibility, timedelta(seconds=1))
    )


def open_store(
    store_url: str, url: str, *, retention: Retention | None = None
) -> tuple[JobStore, bool]:
    """The job store named by the ``store=`` option, and whether other processes share it.

    ``memory`` (the default) keeps only the done keys of the jobs that ran in the process (no
    records, which nobody could read): results are refused and idempotency is per worker
    process (`Capabilities.results` is False), bounded by `retention` (expired keys are deleted
    as new ones are written). ``sqlite:///path`` shares them between the
    processes of one machine; ``dynamodb://TABLE`` (`jobkit_sqs.dynamodb`) between the
    processes of every machine, taking the SQS URL's region, endpoint_url and profile unless it
    names its own.
    """
    retention = retention or Retention()
    if store_url == "memory":
        return MemoryJobStore(retention=retention, records=False), False
    if store_url.startswith("sqlite:"):
        path = store_url.split("://", 1)[1].removeprefix("/") if "://" in store_url else ""
        if not path:
            raise ConfigurationError(
                f"{redact_url(url)!r}: store={redact_url(store_url)!r} names no file"
            )
        from jobkit.spi import SqliteJobStore

        return SqliteJobStore(path, retention=retention), True
    if store_url.startswith("dynamodb:"):
        config = parse_url(url)
        inherited = {
            k: v
            for k, v in {
                "region": config.region,
                "endpoint_url": config.endpoint_url,
                "profile": config.profile,
            }.items()
            if v
        }
        dynamo = parse_dynamodb_url(store_url, defaults=inherited)
        return DynamoJobStore(dynamo, retention=retention), True
    raise ConfigurationError(
        f"{redact_url(url)!r}: store={redact_url(store_url)!r} is not supported; use "
        "store=memory, store=sqlite:///path/to/jobs.db (one machine) or "
        "store=dynamodb://TABLE (every machine)"
    )
