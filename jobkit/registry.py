"""Backends are found by URL scheme through the ``jobkit.backends`` entry-point group.

A distribution provides a scheme by declaring, in its pyproject.toml::

    [project.entry-points."jobkit.backends"]
    "sqs" = "jobkit_sqs:backend_from_url"

The target is called with the whole URL and returns a `Backend`. The core never imports an
adapter by name; it only knows, for the error message, which distribution provides which scheme.
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

KNOWN_PROVIDERS = {
    "celery": "jobkit-celery",
    "sqs": "jobkit-sqs",
    "amqp": "jobkit-rabbitmq",
    "rabbitmq": "jobkit-rabbitmq",
    "dramatiq": "jobkit-dramatiq",
    "rq": "jobkit-rq",
}


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
        family = scheme.split("+", 1)[0]
        provider = KNOWN_PROVIDERS.get(family)
        hint = f"pip install {provider}" if provider else "check the URL's scheme"
        raise UnknownBackend(
            f"no backend for scheme {scheme!r} (from {redact_url(url)!r}); installed schemes: "
            f"{', '.join(sorted(schemes)) or 'none'}. To add it: {hint}"
        )
    module_name, _, attr = target.partition(":")
    factory = cast(BackendFactory, getattr(importlib.import_module(module_name), attr))
    return factory(url)
