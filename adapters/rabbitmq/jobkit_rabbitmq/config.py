"""The ``amqp://`` URL and what it configures.

    amqp://user:pass@host:5672/vhost?queue_type=quorum&prefix=jobkit.&heartbeat=10
    amqps://user:pass@host:5671/vhost?...           (TLS, the system's CA bundle)

The vhost is the URL path, percent-encoded (``/`` is ``%2F``; an empty path or ``//`` is the
default vhost ``/``). Credentials are redacted wherever the URL is printed (`jobkit.redact_url`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl, unquote, urlsplit

from jobkit import ConfigurationError
from jobkit.spi import Retention, pop_retention, redact_url

DEFAULT_PREFIX = "jobkit."
RESERVED = (".dlq", ".delay.", ".queues")
# The URL option that gives the workers a shared job store (idempotency keys, results).
STORE_OPTION = "store=sqlite:///path/to/jobs.db"
# RabbitMQ's own default consumer_timeout (rabbitmq.conf `consumer_timeout`), 30 minutes.
SERVER_CONSUMER_TIMEOUT = timedelta(minutes=30)
# RabbitMQ's own default max_message_size (rabbitmq.conf), 128 MiB: the most jobkit may send
SERVER_MAX_MESSAGE_BYTES = 128 * 1024 * 1024
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# RabbitMQ's own dead_letter_worker_publisher_confirm_timeout (advanced.config), 180 s
SERVER_DEAD_LETTER_RETRY = timedelta(seconds=180)
# A server that retries at-least-once dead-lettering at most this long after a refusal brings
# delayed jobs through a broker restart in time for them to count as surviving it.
RESTART_SAFE_RETRY = timedelta(seconds=10)
_LEVEL_FACTOR = 4  # between delay queues' TTLs: fewer queues, more hops per delay
_QUEUE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_KNOWN = (
    "queue_type, max_priority, prefix, heartbeat, prefetch, delivery_limit, consumer_timeout, "
    "precision, connect_timeout, confirm_timeout, max_message_bytes, dead_letter_retry, store, "
    "records_ttl, keys_ttl"
)


@dataclass(frozen=True, kw_only=True)
class RabbitConfig:
    """One configured RabbitMQ backend.

    `queue_type` is ``quorum`` (default: replicated, delivery counts, a delivery limit) or
    ``classic`` (for priorities: `max_priority` levels through ``x-max-priority``).
    `prefix` goes before every jobkit queue name (``default`` -> ``jobkit.default``; dead
    letters in ``jobkit.default.dlq``, delays in ``jobkit.default.delay.<ms>``).
    `delivery_limit` is the quorum queues' ``x-delivery-limit``: the broker dead-letters a
    message returned that many times without an ack (crash loops); jobkit's own releases are
    not counted by it. `consumer_timeout` must state the server's ``consumer_timeout``: a job
    held longer is taken away by the broker, so jobkit refuses time limits beyond it.
    `precision` is the delay queues' smallest step: delays are honoured to within it, late,
    never early. `prefetch` is the channel's prefetch count; 0 (default) matches it to what
    the worker asks for (its buffer: concurrency x (prefetch + 1)).
    `max_message_bytes` is the largest body jobkit sends (16 MiB by default; up to the server's
    ``max_message_size``, 128 MiB by default): a quorum queue keeps its messages in memory, and
    every worker holds a prefetch window of them, so large payloads belong elsewhere.
    `dead_letter_retry` must state the server's ``dead_letter_worker_publisher_confirm_timeout``
    (advanced.config; 180 s by default): a delay that falls due while its target queue is still
    recovering after a restart is moved on only that long later. Up to `RESTART_SAFE_RETRY`,
    the backend claims that jobs survive a broker restart (see docs/adapters/rabbitmq.md).
    """

    url: str
    tls: bool
    host: str
    port: int
    vhost: str
    username: str
    password: str = field(repr=False)
    queue_type: str = "quorum"
    max_priority: int = 10
    prefix: str = DEFAULT_PREFIX
    heartbeat: int = 10
    prefetch: int = 0
    delivery_limit: int = 20
    consumer_timeout: timedelta = SERVER_CONSUMER_TIMEOUT
    precision: timedelta = timedelta(milliseconds=100)
    connect_timeout: float = 5.0
    confirm_timeout: float = 30.0
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    dead_letter_retry: timedelta = SERVER_DEAD_LETTER_RETRY
    store: str = "memory"
    retention: Retention = field(default_factory=Retention)

    @property
    def priorities(self) -> int:
        return self.max_priority if self.queue_type == "classic" else 1

    def queue_name(self, queue: str) -> str:
        for suffix in RESERVED:
            if suffix in queue:
                raise ConfigurationError(
                    f"queue {queue!r}: names containing {suffix!r} are reserved for jobkit's "
                    "dead-letter and delay queues; choose another name"
                )
        name = f"{self.prefix}{queue}"
        if not _QUEUE_NAME.match(name):
            raise ConfigurationError(
                f"queue {queue!r} gives the RabbitMQ queue name {name!r}; jobkit-rabbitmq "
                "allows 1-200 characters of letters, digits and '_.:-' (prefix included)"
            )
        return name

    def dlq_name(self, queue: str) -> str:
        return self.queue_name(queue) + ".dlq"

    def delay_name(self, queue: str, ms: int) -> str:
        return f"{self.queue_name(queue)}.delay.{ms}"

    @property
    def directory_name(self) -> str:
        """The queue that lists the jobkit queues of this prefix (for `stats()`)."""
        return f"{self.prefix}.queues"

    def delay_levels(self) -> list[int]:
        """The delay queues' TTLs in ms: `precision` x 4^k up to about 36 hours (11 quorum
        queues with the default precision); a delay takes at most 3 hops per level, and a
        longer one hops through the largest as often as needed."""
        step = max(1, int(self.precision.total_seconds() * 1000))
        levels = [step]
        while levels[-1] * _LEVEL_FACTOR <= 36 * 3600 * 1000:
            levels.append(levels[-1] * _LEVEL_FACTOR)
        return levels


def parse_url(url: str) -> RabbitConfig:
    """Parse an ``amqp://`` or ``amqps://`` URL. Raises `ConfigurationError` naming the bad
    option and what is allowed."""
    shown = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("amqp", "amqps"):
        raise ConfigurationError(f"{shown!r} is not an amqp:// or amqps:// URL")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    vhost = unquote(path) if path else "/"
    try:
        port = parts.port or (5671 if scheme == "amqps" else 5672)
    except ValueError:
        raise ConfigurationError(f"{shown!r}: the port is not a number") from None
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    retention = pop_retention(options, where=f"{shown!r}: ")
    queue_type = options.pop("queue_type", "quorum") or "quorum"
    if queue_type not in ("quorum", "classic"):
        raise ConfigurationError(
            f"{shown!r}: queue_type={queue_type!r}; use quorum (default) or classic"
        )
    config = RabbitConfig(
        url=url,
        tls=scheme == "amqps",
        host=parts.hostname or "localhost",
        port=port,
        vhost=vhost,
        username=unquote(parts.username or "guest"),
        password=unquote(parts.password or "guest"),
        queue_type=queue_type,
        max_priority=int(_number(options, "max_priority", 10, 2, 255, shown)),
        prefix=options.pop("prefix", DEFAULT_PREFIX),
        heartbeat=int(_number(options, "heartbeat", 10, 1, 600, shown)),
        prefetch=int(_number(options, "prefetch", 0, 0, 65_535, shown)),
        delivery_limit=int(_number(options, "delivery_limit", 20, 1, 10_000, shown)),
        consumer_timeout=timedelta(
            seconds=_number(options, "consumer_timeout", 1800, 10, 7 * 24 * 3600, shown)
        ),
        precision=timedelta(seconds=_number(options, "precision", 0.1, 0.01, 60, shown)),
        connect_timeout=_number(options, "connect_timeout", 5, 0.1, 600, shown),
        confirm_timeout=_number(options, "confirm_timeout", 30, 0.1, 600, shown),
        max_message_bytes=int(
            _number(
                options,
                "max_message_bytes",
                DEFAULT_MAX_MESSAGE_BYTES,
                1024,
                SERVER_MAX_MESSAGE_BYTES,
                shown,
            )
        ),
        dead_letter_retry=timedelta(
            seconds=_number(
                options,
                "dead_letter_retry",
                SERVER_DEAD_LETTER_RETRY.total_seconds(),
                0.1,
                24 * 3600,
                shown,
            )
        ),
        store=options.pop("store", "memory") or "memory",
        retention=retention,
    )
    if options:
        raise ConfigurationError(
            f"{shown!r}: unknown option(s) {', '.join(sorted(options))}; known: {_KNOWN}"
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
