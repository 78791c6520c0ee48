"""The ``dramatiq+redis://`` and ``dramatiq+amqp://`` URLs and what they configure.

    dramatiq+redis://[:PASSWORD@]HOST:PORT/DB?namespace=dramatiq&heartbeat=5&store=memory
    dramatiq+amqp://USER:PASSWORD@HOST:PORT/VHOST?priorities=10&store=sqlite:///jobs.db

Options (all optional):

- ``profile``: ``hardened`` (the default: jobkit's settings) or ``native`` (Dramatiq's own
  defaults, kept only so that the conformance suite can show what they lose).
- ``heartbeat`` (Redis): seconds without a heartbeat after which a worker counts as dead and its
  unacked messages are requeued (Dramatiq's ``heartbeat_timeout``). Hardened: 5 s, and the
  requeue runs on every fetch (Dramatiq's ``maintenance_chance`` at 100 %). Native: 60 s, 0.1 %.
- ``namespace`` (Redis): the key prefix, Dramatiq's ``namespace`` (default ``dramatiq``).
- ``priorities`` (RabbitMQ): levels 1..255 (queues declared with ``x-max-priority``); 1 = none.
- ``dead_ttl`` (RabbitMQ): unset by default: dead letters never expire (``Q.XQ`` is declared
  without a TTL, where Dramatiq declares 7 days). Set it only to match queues a plain Dramatiq
  deployment declared already (RabbitMQ refuses to redeclare a queue with other arguments);
  it is then in the URL, which `jobkit status` prints. At most 2**32-1 ms (49 days).
  Redis dead letters never expire.
- ``persistent`` (Redis): ``yes`` when the Redis server persists its data (AOF): only then
  does the backend claim that jobs survive a Redis restart.
- ``store``: the job store, ``memory`` (per process) or ``sqlite:///path`` (shared by the
  processes of one machine: results and idempotency keys across workers).
- ``records_ttl`` / ``keys_ttl``: the store's retention.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from jobkit import ConfigurationError
from jobkit.spi import Retention, parse_duration, pop_retention, redact_url

RABBIT_MAX_TTL = timedelta(milliseconds=2**32 - 1)
NEVER = timedelta(days=365 * 100)  # "never" for Redis dead letters (Dramatiq's TTL argument)
# The URL option that gives the workers a shared job store (idempotency keys, results).
STORE_OPTION = "store=sqlite:///path/to/jobs.db"


@dataclass(frozen=True, kw_only=True)
class DramatiqConfig:
    """One configured Dramatiq backend. `broker_url` is the native URL (``redis://...`` or
    ``amqp://...``), secrets included: print it only through `redact_url`."""

    broker: str  # "redis" or "amqp"
    broker_url: str
    hardened: bool = True
    namespace: str = "dramatiq"
    heartbeat: timedelta = timedelta(seconds=5)
    maintenance_chance: float = 1.0  # share of fetches that run dead-worker maintenance
    priorities: int = 10
    dead_ttl: timedelta | None = None  # None: dead letters never expire
    persistent: bool = False
    store: str = "memory"
    retention: Retention = field(default_factory=Retention)

    @property
    def shown(self) -> str:
        return redact_url(f"dramatiq+{self.broker_url}")


def parse_url(url: str) -> DramatiqConfig:
    """Parse a ``dramatiq+redis://`` or ``dramatiq+amqp://`` URL. Raises `ConfigurationError`
    naming the bad option and what is allowed."""
    shown = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("dramatiq+redis", "dramatiq+amqp"):
        raise ConfigurationError(
            f"{shown!r} is not a dramatiq URL; use dramatiq+redis://HOST:PORT/DB or "
            "dramatiq+amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )
    broker = scheme.split("+", 1)[1]
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    retention = pop_retention(options, where=f"{shown!r}: ")
    profile = options.pop("profile", "hardened") or "hardened"
    if profile not in ("hardened", "native"):
        raise ConfigurationError(f"{shown!r}: profile must be 'hardened' or 'native'")
    hardened = profile == "hardened"
    path = parts.path
    if broker == "amqp" and path in ("", "/", "//"):
        path = "/%2F"  # the default vhost "/", spelled as pika reads it (kombu's "//" too)
    native_url = urlunsplit((broker, parts.netloc, path, "", ""))
    heartbeat = _duration(options, "heartbeat", timedelta(seconds=5 if hardened else 60), shown)
    dead_ttl: timedelta | None = None
    priorities = 1
    if broker == "amqp":
        if options.get("dead_ttl"):
            dead_ttl = _duration(options, "dead_ttl", RABBIT_MAX_TTL, shown)
        options.pop("dead_ttl", None)
        if dead_ttl is not None and dead_ttl > RABBIT_MAX_TTL:
            raise ConfigurationError(
                f"{shown!r}: dead_ttl={options.get('dead_ttl')} is over RabbitMQ's queue TTL "
                "limit of 2**32-1 ms (49 days); use dead_ttl=49d or less"
            )
        raw = options.pop("priorities", "10")
        if not raw.isdigit() or not 1 <= int(raw) <= 255:
            raise ConfigurationError(f"{shown!r}: priorities={raw!r} must be 1..255")
        priorities = int(raw)
    config = DramatiqConfig(
        broker=broker,
        broker_url=native_url,
        hardened=hardened,
        namespace=options.pop("namespace", "dramatiq") or "dramatiq",
        heartbeat=heartbeat,
        maintenance_chance=1.0 if hardened else 0.001,
        priorities=priorities,
        dead_ttl=dead_ttl,
        persistent=_flag(options, "persistent", shown),
        store=options.pop("store", "memory") or "memory",
        retention=retention,
    )
    if options:
        known = "profile, heartbeat, namespace, persistent, store, records_ttl, keys_ttl"
        if broker == "amqp":
            known += ", priorities, dead_ttl"
        raise ConfigurationError(
            f"{shown!r}: unknown option(s) {', '.join(sorted(options))}; known: {known}"
        )
    return config


def _duration(options: dict[str, str], key: str, default: timedelta, shown: str) -> timedelta:
    raw = options.pop(key, "")
    if not raw:
        return default
    return parse_duration(raw, what=f"{shown!r}: {key}")


def _flag(options: dict[str, str], key: str, shown: str) -> bool:
    raw = options.pop(key, "no").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("", "0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{shown!r}: {key}={raw!r} is not yes or no")
