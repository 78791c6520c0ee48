"""What every command needs: the app and its backend, from flags or configuration."""

from __future__ import annotations

import argparse

from jobkit.app import App
from jobkit.backend import Backend
from jobkit.config import resolve_app_path, resolve_backend_url
from jobkit.errors import ConfigurationError
from jobkit.loading import load_app
from jobkit.registry import open_backend
from jobkit.retention import parse_duration


def backend_url(args: argparse.Namespace) -> str:
    return resolve_backend_url(getattr(args, "backend", None))


def open_app(args: argparse.Namespace) -> tuple[str, App]:
    path = resolve_app_path(getattr(args, "app", None))
    app = load_app(path)
    app.use(backend_url(args))
    return path, app


def open_configured_backend(args: argparse.Namespace) -> Backend:
    return open_backend(backend_url(args))


def seconds(value: str) -> float:
    """An argparse type: a positive, finite duration (``30``, ``30s``, ``5m``) in seconds."""
    return _duration(value, allow_zero=False)


def seconds_or_zero(value: str) -> float:
    """As `seconds`, but zero is allowed (e.g. ``--grace 0``: stop at once)."""
    return _duration(value, allow_zero=True)


def _duration(value: str, *, allow_zero: bool) -> float:
    try:
        return parse_duration(value, what="", allow_zero=allow_zero).total_seconds()
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("=")) from None
