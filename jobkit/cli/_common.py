"""What every command needs: the app and its backend, from flags or configuration."""

from __future__ import annotations

import argparse

from jobkit.app import App
from jobkit.backend import Backend
from jobkit.config import resolve_app_path, resolve_backend_url
from jobkit.loading import load_app
from jobkit.registry import open_backend


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
    try:
        number = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from exc
    if number < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return number
