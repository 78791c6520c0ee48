"""Parse ``celery+redis://`` and ``celery+amqp://`` URLs into settings.

Options go in the query string, for example
``celery+redis://127.0.0.1:6379/0?visibility_timeout=60&prefetch=1``. Unknown options are an
error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import jobkit
from jobkit import spi
from jobkit.spi import Retention, parse_duration, pop_retention

_REDIS_OPTIONS = {"visibility_timeout", "restore_interval", "persistent"}
_COMMON_OPTIONS = {
    "prefetch",
    "store",
    "records_ttl",
    "keys_ttl",
    "result_ttl",  # the older name of records_ttl
    "profile",
    "events",
    "hard_limit_margin",
}
_PROFILES = ("hardened", "native")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One configured Celery backend.

    `broker` is "redis" or "amqp"; `broker_url` the URL Celery/kombu get (no ``celery+``);
    `store_url` where job records live (a ``redis://`` URL) or None for no records; `retention`
    how long records and completed idempotency keys are kept there.
    `profile` is "hardened" (jobkit's settings) or "native" (Celery's defaults: early ack; only
    for demonstrating what the conformance suite catches).
    `persistent` (Redis only, ``persistent=yes``) declares that the Redis server persists its
    data (AOF or RDB), so queued jobs survive a restart of it; jobkit cannot see that setting.
    """

    url: str
    broker: str
    broker_url: str
    visibility_timeout: timedelta = timedelta(seconds=60)
    visibility_timeout_given: bool = False
    restore_interval: timedelta | None = None
    prefetch: int = 1
    store_url: str | None = None
    retention: Retention = field(default_factory=Retention)
    profile: str = "hardened"
    events: bool = False
    hard_limit_margin: timedelta = timedelta(seconds=5)
    persistent: bool = False

    @property
    def hardened(self) -> bool:
        return self.profile == "hardened"

    @property
    def restore_every(self) -> float:
        """Seconds between kombu's unacked sweeps (also our heartbeat and delay mover)."""
        if self.restore_interval is not None:
            return self.restore_interval.total_seconds()
        return max(0.25, min(1.0, self.visibility_timeout.total_seconds() / 4))


def _seconds(name: str, value: str) -> timedelta:
    return parse_duration(value, what=f"option {name}")


def parse_url(url: str) -> Settings:
    """Settings for a ``celery+redis://`` or ``celery+amqp://`` URL.

    Raises `ConfigurationError` naming the bad part.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("celery+redis", "celery+amqp"):
        raise jobkit.ConfigurationError(
            f"{spi.redact_url(url)!r} is not a Celery URL; use celery+redis://HOST:PORT/DB "
            "or celery+amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )
    broker = scheme.split("+", 1)[1]
    allowed = _COMMON_OPTIONS | (_REDIS_OPTIONS if broker == "redis" else set())
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise jobkit.ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {spi.redact_url(url)!r}; "
            f"{broker} takes: {', '.join(sorted(allowed))}"
        )
    broker_url = urlunsplit((broker, parts.netloc, parts.path, "", ""))
    kwargs: dict[str, object] = {}
    if "visibility_timeout" in options:
        kwargs["visibility_timeout"] = _seconds("visibility_timeout", options["visibility_timeout"])
    if "restore_interval" in options:
        kwargs["restore_interval"] = _seconds("restore_interval", options["restore_interval"])
    if "result_ttl" in options:
        options.setdefault("records_ttl", options.pop("result_ttl"))
    kwargs["retention"] = pop_retention(options, where=f"{spi.redact_url(url)!r}: ")
    if "hard_limit_margin" in options:
        kwargs["hard_limit_margin"] = _seconds("hard_limit_margin", options["hard_limit_margin"])
    if "prefetch" in options:
        try:
            prefetch = int(options["prefetch"])
        except ValueError:
            prefetch = 0
        if prefetch < 1:
            raise jobkit.ConfigurationError(
                f"option prefetch={options['prefetch']!r} must be a whole number >= 1"
            )
        kwargs["prefetch"] = prefetch
    profile = options.get("profile", "hardened")
    if profile not in _PROFILES:
        raise jobkit.ConfigurationError(
            f"option profile={profile!r}: use one of {', '.join(_PROFILES)}"
        )
    kwargs["profile"] = profile
    kwargs["events"] = options.get("events", "0").lower() in ("1", "true", "yes")
    kwargs["persistent"] = options.get("persistent", "0").lower() in ("1", "true", "yes")
    store = options.get("store")
    if store is None and broker == "redis":
        store = broker_url  # the broker's own Redis keeps the job records
    if store is not None and store not in ("", "none"):
        if not store.startswith(("redis://", "rediss://")):
            raise jobkit.ConfigurationError(
                f"option store={spi.redact_url(store)!r}: the Celery backend keeps job "
                "records in Redis; give a redis://HOST:PORT/DB URL, or store=none for no records"
            )
        kwargs["store_url"] = store
    return Settings(url=url, broker=broker, broker_url=broker_url, **kwargs)  # type: ignore[arg-type]
