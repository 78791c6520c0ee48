"""A Celery app built from the environment, for the plain ``celery`` command::

    JOBKIT_APP=myproject.jobs:app JOBKIT_BACKEND=celery+redis://127.0.0.1:6379/0 \\
        celery -A jobkit_celery.env worker -Q default -c 2

The jobkit app (``JOBKIT_APP``, or ``[tool.jobkit] app``) and backend URL (``JOBKIT_BACKEND``,
or ``[tool.jobkit] backend``) are resolved as ``jobkit worker`` resolves them; every job becomes
a Celery task under its own name, with the same hardened settings. ``app`` is built on first
access (module ``__getattr__``), so importing this module has no side effects.
"""

from __future__ import annotations

import importlib
from typing import Any

import jobkit
from jobkit import spi
from jobkit.spi import resolve_app_path, resolve_backend_url

_built: dict[str, Any] = {}


def build() -> Any:
    """The Celery app for the configured jobkit app and backend."""
    if "app" not in _built:
        module_name, _, attr = resolve_app_path().partition(":")
        jobkit_app = getattr(importlib.import_module(module_name), attr or "app")
        if not isinstance(jobkit_app, jobkit.App):
            raise jobkit.ConfigurationError(f"{module_name}:{attr} is not a jobkit.App")
        backend = spi.open_backend(resolve_backend_url())
        from jobkit_celery.backend import CeleryBackend

        if not isinstance(backend, CeleryBackend):
            raise jobkit.ConfigurationError(
                "celery -A jobkit_celery.env needs a celery+redis:// or celery+amqp:// backend"
            )
        backend.runtime.register(jobkit_app)
        _built["app"] = backend.celery
    return _built["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        return build()
    raise AttributeError(name)
