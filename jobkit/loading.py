"""Import an application object from a ``module:attribute`` path."""

from __future__ import annotations

import importlib

from jobkit.app import App
from jobkit.errors import ConfigurationError


def load_app(path: str) -> App:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"app {path!r}: write it as module:attribute, e.g. shop.jobs:app")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"app {path!r}: cannot import {module_name!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"app {path!r}: {module_name}.{attr} is {type(app).__name__}, not a jobkit.App"
        )
    return app
