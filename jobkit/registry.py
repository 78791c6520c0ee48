"""Backends are found by URL scheme through the ``jobkit.backends`` entry-point group.

A distribution provides a scheme by declaring, in its pyproject.toml::

    [project.entry-points."jobkit.backends"]
    "sqs" = "jobkit_sqs:backend_from_url"

The target is called with the whole URL and returns a `Backend`. The core never imports an
adapter by name; it only knows, for the error message, which published distribution provides
which scheme (`DISTRIBUTIONS`), and which scheme to write for a broker named otherwise.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import cast

from jobkit.backend import Backend
from jobkit.errors import ConfigurationError, UnknownBackend
from jobkit.redact import redact_url

GROUP = "jobkit.backends"

BackendFactory = Callable[[str], Backend]

# Schemes of the backends that exist as distributions, and the distribution to install.
DISTRIBUTIONS = {
    "celery+redis": "jobkit-celery",
    "celery+amqp": "jobkit-celery",
    "sqs": "jobkit-sqs",
    "amqp": "jobkit-rabbitmq",
    "amqps": "jobkit-rabbitmq",
}
# Schemes people write for a broker that a jobkit backend reaches under another scheme.
_SPELLED_OTHERWISE = {
    "redis": "celery+redis",
    "rediss": "celery+redis",
    "rabbitmq": "amqp",
    "celery": "celery+redis or celery+amqp",
}


def _hint(scheme: str, installed: dict[str, str]) -> str:
    """What to do about an unknown scheme, naming only schemes and distributions that exist."""
    if scheme in DISTRIBUTIONS:
        return f"pip install {DISTRIBUTIONS[scheme]}"
    instead = _SPELLED_OTHERWISE.get(scheme)
    if instead is not None:
        missing = sorted({DISTRIBUTIONS[s] for s in instead.split(" or ") if s not in installed})
        install = f" (pip install {', '.join(missing)})" if missing else ""
        return f"write the scheme as {instead}://{install}"
    available = sorted(set(DISTRIBUTIONS) - set(installed))
    more = (
        "; other backends: " + ", ".join(f"{s} (pip install {DISTRIBUTIONS[s]})" for s in available)
        if available
        else ""
    )
    return f"use one of the installed schemes{more}"


def scheme_of(url: str) -> str:
    if "://" not in url:
        raise ConfigurationError(
            f"backend URL {redact_url(url)!r} has no scheme; write it as scheme://..., "
            "for example sqlite:///jobkit.db"
        )
    return url.split("://", 1)[0].lower()


def installed_schemes() -> dict[str, str]:
    """Scheme -> "module:function" for every installed backend."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP)}


def open_backend(url: str) -> Backend:
    """Open the backend for `url`. Raises `UnknownBackend` naming what is installed."""
    scheme = scheme_of(url)
    schemes = installed_schemes()
    target = schemes.get(scheme)
    if target is None:
        raise UnknownBackend(
            f"no backend for scheme {scheme!r} (from {redact_url(url)!r}); installed schemes: "
            f"{', '.join(sorted(schemes)) or 'none'}. To fix: {_hint(scheme, schemes)}"
        )
    module_name, _, attr = target.partition(":")
    factory = cast(BackendFactory, getattr(importlib.import_module(module_name), attr))
    return factory(url)
