"""How long job stores keep what they know, and the one duration syntax jobkit reads.

Every store keeps two things for a while, then forgets them:

* a **job record** (state, attempts, errors, result) for `Retention.records` after its last
  update (default 7 days); `handle.result()` and `handle.status()` read it;
* a **completed idempotency key** for `Retention.keys` after the job succeeded (default 24 hours):
  the dedup window. A duplicate that arrives within it is acked without running; one that arrives
  after it runs again.

Both are set in the backend URL's query, on every backend, e.g. ``?records_ttl=7d&keys_ttl=24h``.

Durations are written as a number with an optional unit: ``90`` or ``90s`` (seconds), ``15m``,
``24h``, ``7d``; fractions are allowed (``0.5s``). They must be positive and finite.
`parse_duration` is the only parser; the CLI's ``--lease``, ``--grace`` and ``--poll`` use it too.
"""

from __future__ import annotations

import math
import re
from collections.abc import MutableMapping
from dataclasses import dataclass
from datetime import timedelta

from jobkit.errors import ConfigurationError

DEFAULT_RECORDS_TTL = timedelta(days=7)
DEFAULT_KEYS_TTL = timedelta(hours=24)

DURATION_SYNTAX = "a number with a unit s, m, h or d (e.g. 30, 30s, 15m, 7d)"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smhd]?)\s*$", re.IGNORECASE)
_LONGEST = timedelta(days=3650)


def parse_duration(raw: str, *, what: str, allow_zero: bool = False) -> timedelta:
    """`raw` (``30``, ``30s``, ``15m``, ``24h``, ``7d``) as a timedelta.

    Raises `ConfigurationError` naming `what` (e.g. ``"--lease"`` or ``"records_ttl"``), the
    value given and the syntax allowed. Zero is refused unless `allow_zero`; negative, NaN,
    infinite and values over ten years always are.
    """
    match = _DURATION.match(raw)
    sign = "zero or a positive number" if allow_zero else "a positive number"
    problem = f"{what}={raw!r} is not a duration: write {sign} of seconds, or {DURATION_SYNTAX}"
    if match is None:
        raise ConfigurationError(problem)
    seconds = float(match.group(1)) * _UNITS[(match.group(2) or "s").lower()]
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigurationError(problem)
    duration = timedelta(seconds=seconds)
    if duration > _LONGEST:
        raise ConfigurationError(f"{what}={raw!r} is longer than ten years; write a shorter one")
    return duration


@dataclass(frozen=True, kw_only=True)
class Retention:
    """How long a store keeps job records and completed idempotency keys (see module doc)."""

    records: timedelta = DEFAULT_RECORDS_TTL
    keys: timedelta = DEFAULT_KEYS_TTL

    @property
    def prune_every(self) -> timedelta:
        """How often a store deletes expired entries: a tenth of the shorter window, 1 s..60 s."""
        tenth = min(self.records, self.keys) / 10
        return min(max(tenth, timedelta(seconds=1)), timedelta(seconds=60))


RETENTION_OPTIONS = ("records_ttl", "keys_ttl")


def pop_retention(options: MutableMapping[str, str], *, where: str = "") -> Retention:
    """Take ``records_ttl`` and ``keys_ttl`` out of parsed URL options (defaults if absent).

    Raises `ConfigurationError` for a value that is not a positive duration; its message starts
    with `where` (e.g. the redacted URL and ": ").
    """
    records = options.pop("records_ttl", "")
    keys = options.pop("keys_ttl", "")
    return Retention(
        records=parse_duration(records, what=f"{where}records_ttl")
        if records
        else DEFAULT_RECORDS_TTL,
        keys=parse_duration(keys, what=f"{where}keys_ttl") if keys else DEFAULT_KEYS_TTL,
    )
