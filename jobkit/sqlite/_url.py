"""Parsing ``sqlite://`` backend URLs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import parse_qs, unquote, urlsplit

from jobkit.errors import ConfigurationError
from jobkit.retention import RETENTION_OPTIONS, Retention, parse_duration, pop_retention
from jobkit.sqlite._db import SYNCHRONOUS
from jobkit.sqlite.store import SqliteJobStore
from jobkit.sqlite.transport import SqliteTransport
from jobkit.transport_backend import TransportBackend

_FORMS = "write sqlite:///relative/path.db or sqlite:////absolute/path.db"
_OPTIONS = ("lease", "synchronous", *RETENTION_OPTIONS)


@dataclass(frozen=True, kw_only=True)
class SqliteUrl:
    path: str
    lease: timedelta = timedelta(seconds=30)
    synchronous: str = "normal"
    retention: Retention = field(default_factory=Retention)


def parse_url(url: str) -> SqliteUrl:
    """Parse a ``sqlite://`` URL. Raises `ConfigurationError` saying what to write instead."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigurationError(f"{url!r} is not a sqlite URL; {_FORMS}")
    if parts.netloc:
        raise ConfigurationError(
            f"sqlite URL {url!r} names a host ({parts.netloc!r}), but SQLite is a local file; "
            f"{_FORMS} (three slashes for a relative path, four for an absolute one)"
        )
    path = unquote(parts.path)[1:]  # drop the slash that ends the empty authority
    if not path or path.endswith("/"):
        raise ConfigurationError(f"sqlite URL {url!r} names no file; {_FORMS}")
    if path == ":memory:":
        raise ConfigurationError(
            f"sqlite URL {url!r}: an in-memory SQLite database cannot be shared with workers; "
            f"{_FORMS}, or use memory:// within one process"
        )
    options = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigurationError(
            f"sqlite URL {url!r} has unknown option(s) {', '.join(unknown)}; the options are "
            "lease, records_ttl, keys_ttl (durations such as 60s, 24h, 7d) and synchronous "
            "(normal or full), e.g. sqlite:///jobkit.db?lease=60s&keys_ttl=24h"
        )
    last = {key: values[-1] for key, values in options.items()}
    where = f"sqlite URL {url!r}: "
    retention = pop_retention(last, where=where)
    lease = parse_duration(last.get("lease", "30"), what=f"{where}lease")
    synchronous = options.get("synchronous", ["normal"])[-1].lower()
    if synchronous not in SYNCHRONOUS:
        raise ConfigurationError(
            f"sqlite URL {url!r}: synchronous={synchronous!r} is not supported; write "
            "synchronous=normal (survives process kills) or synchronous=full (also power loss)"
        )
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise ConfigurationError(
            f"sqlite URL {url!r}: the directory {directory!r} does not exist; create it, "
            "or point the URL at an existing directory"
        )
    return SqliteUrl(path=path, lease=lease, synchronous=synchronous, retention=retention)


def backend_from_url(url: str) -> TransportBackend:
    """The ``jobkit.backends`` entry point for ``sqlite://``: transport and store in one file."""
    config = parse_url(url)
    return TransportBackend(
        SqliteTransport(config.path, synchronous=config.synchronous),
        SqliteJobStore(config.path, synchronous=config.synchronous, retention=config.retention),
        default_lease=config.lease,
    )
