"""The ``sqs://`` URL and what it configures.

    sqs://[REGION]?endpoint_url=http://127.0.0.1:5000&prefix=jobkit-&visibility=30&fifo=false

Credentials never go in the URL: they come from the standard AWS chain (environment variables,
shared credentials file or ``profile=``, instance or task role). A URL with a user or password is
refused, and errors name the URL only through `jobkit.redact_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from jobkit import ConfigurationError
from jobkit.spi import Retention, pop_retention, redact_url

DEFAULT_PREFIX = "jobkit-"
MAX_VISIBILITY = timedelta(hours=12)
MAX_NATIVE_DELAY = timedelta(minutes=15)
MAX_WAIT_SECONDS = 20
SQS_MESSAGE_LIMIT = 262_144  # 256 KiB, the limit this adapter configures on its queues
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


# The queues of the delayed index and its departures (`jobkit_sqs.migration`): not job queues.
INDEX_SUFFIXES = (
    "-jobkit-delayed",
    "-jobkit-gone-delayed",
    "-jobkit-gone-leased",
    "-jobkit-gone-maybe",
)


@dataclass(frozen=True, kw_only=True)
class SqsConfig:
    """One configured SQS backend.

    `prefix` is put before every jobkit queue name (``default`` -> ``jobkit-default``), its dead
    letters go to ``<prefix><queue>-dlq``. `visibility` is the queues' default visibility timeout
    (the worker's lease overrides it per receive). `max_receives` is the redrive policy's
    ``maxReceiveCount``: SQS moves a message that many receives old to the DLQ by itself, a safety
    net for crash loops; 0 creates no redrive policy. `store` is the job store: ``memory``, a
    ``sqlite:///path`` URL (one machine) or a ``dynamodb://TABLE`` URL (every machine, see
    `jobkit_sqs.dynamodb`); `retention` how long it keeps job records and completed keys.
    `delay_hop` is the longest native delay used per hop (SQS allows 900 s); a lower value only
    serves to exercise the re-delay path in tests.
    """

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    prefix: str = DEFAULT_PREFIX
    visibility: timedelta = timedelta(seconds=30)
    fifo: bool = False
    fifo_group: str = "job"  # "job": one group per job (parallel); "queue": strict order
    max_receives: int = 10
    max_message_bytes: int = SQS_MESSAGE_LIMIT
    wait: int = MAX_WAIT_SECONDS
    create: bool = True
    store: str = "memory"
    delay_hop: int = int(MAX_NATIVE_DELAY.total_seconds())
    connect_timeout: float = 5.0
    max_retries: int = 3
    retention: Retention = field(default_factory=Retention)

    def queue_name(self, queue: str) -> str:
        if queue.endswith("-dlq"):
            raise ConfigurationError(
                f"queue {queue!r}: names ending in '-dlq' are reserved for dead-letter queues"
            )
        if queue.endswith(INDEX_SUFFIXES):
            raise ConfigurationError(
                f"queue {queue!r}: names ending in '-jobkit-delayed' or '-jobkit-gone-...' are "
                "reserved for the index of delayed jobs; choose another name"
            )
        return self._native(queue, "")

    def dlq_name(self, queue: str) -> str:
        return self._native(queue, "-dlq")

    def jobkit_queue(self, native_name: str) -> str | None:
        """The jobkit queue a native source-queue name belongs to; None for DLQs and strangers."""
        if native_name.endswith(".fifo") != self.fifo:
            return None
        name = native_name.removesuffix(".fifo")
        if not name.startswith(self.prefix) or name.endswith(("-dlq", *INDEX_SUFFIXES)):
            return None
        return name[len(self.prefix) :]

    def _native(self, queue: str, suffix: str) -> str:
        base = f"{self.prefix}{queue}{suffix}"
        if not _QUEUE_NAME.match(base) or len(base) + (5 if self.fifo else 0) > 80:
            raise ConfigurationError(
                f"queue {queue!r} gives the SQS queue name {base!r}, which SQS refuses: names are "
                "1-80 characters of letters, digits, '-' and '_' (prefix and '-dlq' included). "
                "Use a shorter queue name or prefix"
            )
        return base + (".fifo" if self.fifo else "")


def parse_url(url: str) -> SqsConfig:
    """Parse an ``sqs://`` URL. Raises `ConfigurationError` naming the bad option."""
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqs":
        raise ConfigurationError(f"{shown!r} is not an sqs:// URL")
    if parts.username or parts.password:
        raise ConfigurationError(
            f"{shown!r} carries credentials; jobkit-sqs takes them only from the AWS chain "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, profile=..., or a role)"
        )
    options: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        options[key] = value
    region = options.pop("region", None) or parts.hostname or None
    retention = pop_retention(options, where=f"{shown!r}: ")
    config = SqsConfig(
        region=region,
        endpoint_url=options.pop("endpoint_url", None) or None,
        profile=options.pop("profile", None) or None,
        prefix=options.pop("prefix", DEFAULT_PREFIX),
        visibility=timedelta(seconds=_number(options, "visibility", 30, 0, 43_200, shown)),
        fifo=_flag(options, "fifo", False, shown),
        fifo_group=options.pop("fifo_group", "job"),
        max_receives=int(_number(options, "max_receives", 10, 0, 1000, shown)),
        max_message_bytes=int(
            _number(options, "max_message_bytes", SQS_MESSAGE_LIMIT, 16_384, 1_048_576, shown)
        ),
        wait=int(_number(options, "wait", MAX_WAIT_SECONDS, 1, MAX_WAIT_SECONDS, shown)),
        create=_flag(options, "create", True, shown),
        store=options.pop("store", "memory") or "memory",
        delay_hop=int(_number(options, "delay_hop", 900, 1, 900, shown)),
        connect_timeout=_number(options, "connect_timeout", 5, 0.1, 600, shown),
        max_retries=int(_number(options, "max_retries", 3, 0, 20, shown)),
        retention=retention,
    )
    if config.fifo_group not in ("job", "queue"):
        raise ConfigurationError(f"{shown!r}: fifo_group must be 'job' or 'queue'")
    if options:
        raise ConfigurationError(
            f"{shown!r}: unknown option(s) {', '.join(sorted(options))}; known: region, "
            "endpoint_url, profile, prefix, visibility, fifo, fifo_group, max_receives, "
            "max_message_bytes, wait, create, store, delay_hop, connect_timeout, max_retries, "
            "records_ttl, keys_ttl"
        )
    config.queue_name("x")  # validates the prefix
    return config


def _number(
    options: dict[str, str], key: str, default: float, low: float, high: float, shown: str
) -> float:
    raw = options.pop(key, None)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{shown!r}: {key}={raw!r} is not a number") from None
    if not low <= value <= high:
        raise ConfigurationError(f"{shown!r}: {key}={raw} is outside {low:g}..{high:g}")
    return value


def _flag(options: dict[str, str], key: str, default: bool, shown: str) -> bool:
    raw = options.pop(key, None)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{shown!r}: {key}={raw!r} is not true or false")
