"""Parse ``rq+redis://`` URLs into settings.

Options go in the query string, e.g. ``rq+redis://127.0.0.1:6379/0?worker=simple``. Unknown
options are an error (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import jobkit
from jobkit import spi
from jobkit.spi import Retention, parse_duration, pop_retention

_OPTIONS = {
    "worker",
    "profile",
    "persistent",
    "heartbeat",
    "maintenance",
    "records_ttl",
    "keys_ttl",
}
_WORKERS = ("fork", "simple")
_PROFILES = ("hardened", "native")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """One configured RQ backend.

    `redis_url` is the URL redis-py gets (no ``rq+``). `worker` is "fork" (RQ's forking `Worker`:
    one work-horse process per job) or "simple" (`SimpleWorker`: jobs run in the worker
    process). `heartbeat` is how often a running job's entry in RQ's `StartedJobRegistry` is
    extended (its TTL is twice that plus one second); `maintenance` how often each worker moves
    due delayed jobs and retries onto their queue and requeues jobs whose heartbeat stopped.
    `retention` is how long job records, finished RQ jobs (so a duplicate id is still refused)
    and completed idempotency keys are kept.
    `profile` "native" keeps RQ's own defaults (no scheduler, RQ's 60 s+ heartbeat TTL, no
    maintenance of our own); only for showing what the conformance suite catches.
    `persistent` (``persistent=yes``) declares that the Redis server persists its data.
    """

    url: str
    redis_url: str
    worker: str = "fork"
    profile: str = "hardened"
    persistent: bool = False
    heartbeat: timedelta = timedelta(seconds=1)
    maintenance: timedelta = timedelta(seconds=1)
    retention: Retention = field(default_factory=Retention)

    @property
    def hardened(self) -> bool:
        return self.profile == "hardened"

    @property
    def time_limit_margin(self) -> timedelta:
        """How long past its limit a job that swallows RQ's alarm runs at most: RQ's timeout is
        whole seconds (rounded up), the worker checks once per heartbeat and kills 1 s past the
        timeout (`_heartbeat.HARD_LIMIT_MARGIN`); RQ's own worker waits 60 s, checking every 30."""
        if not self.hardened:
            return timedelta(seconds=91)
        beat = max(1, round(self.heartbeat.total_seconds()))
        return timedelta(seconds=2 + beat)

    @property
    def heartbeat_ttl(self) -> int:
        """Seconds a running job's registry entry lives without a heartbeat (RQ: whole s)."""
        return 2 * max(1, round(self.heartbeat.total_seconds())) + 1

    @property
    def redelivery_after(self) -> timedelta:
        """At most how long after its worker died a job is back on its queue: the entry's TTL,
        a maintenance pass, and RQ's whole-second scores."""
        return timedelta(seconds=self.heartbeat_ttl + 1) + self.maintenance


def _choice(options: dict[str, str], name: str, allowed: tuple[str, ...]) -> str:
    value = options.get(name, allowed[0])
    if value not in allowed:
        raise jobkit.ConfigurationError(f"option {name}={value!r}: use one of {', '.join(allowed)}")
    return value


def parse_url(url: str) -> Settings:
    """Settings for an ``rq+redis://`` URL. Raises `ConfigurationError` naming the bad part."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rq+redis", "rq+rediss"):
        raise jobkit.ConfigurationError(
            f"{spi.redact_url(url)!r} is not an RQ URL; use rq+redis://HOST:PORT/DB"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise jobkit.ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {spi.redact_url(url)!r}; "
            f"rq+redis takes: {', '.join(sorted(_OPTIONS))}"
        )
    redis_url = urlunsplit((parts.scheme.split("+", 1)[1], parts.netloc, parts.path, "", ""))
    where = f"{spi.redact_url(url)!r}: "
    kwargs: dict[str, object] = {}
    for name in ("heartbeat", "maintenance"):
        if name in options:
            kwargs[name] = parse_duration(options[name], what=f"{where}{name}")
    return Settings(
        url=url,
        redis_url=redis_url,
        worker=_choice(options, "worker", _WORKERS),
        profile=_choice(options, "profile", _PROFILES),
        persistent=options.get("persistent", "no").lower() in ("1", "true", "yes"),
        retention=pop_retention(options, where=where),
        **kwargs,  # type: ignore[arg-type]
    )
