"""Helpers for the operations tests (middleware, metrics, tracing, logs): a worker with extra
environment, the hook and span files of `tests.apps.observed`, a free port, a scrape."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.apps.observed import read_lines
from tests.workers import ROOT, kill_group

APP = "tests.apps.observed:app"
COMMAND = (sys.executable, "-m", "jobkit.cli.main")


def start_observed_worker(
    backend: str, *args: str, log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`jobkit worker` for the observed app; stderr to `log`; our environment plus `env`."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [*COMMAND, "--app", APP, "--backend", backend, "worker", "-q", "obs", *args],
            cwd=ROOT,
            env=full_env,
            stderr=stderr,
            start_new_session=True,
        )


@contextmanager
def serving(backend: str, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """An observed worker serving queue obs until the block ends; then SIGTERM, and it must
    exit 0 (a graceful stop)."""
    proc = start_observed_worker(backend, *args, log=log)
    try:
        yield proc
    finally:
        kill_group(proc, signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0, log.read_text()


def hooks(path: Path, **match: Any) -> list[dict[str, Any]]:
    """The hook calls recorded in `path` whose fields equal `match`, in order."""
    return [e for e in read_lines(str(path)) if all(e.get(k) == v for k, v in match.items())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    """The text of http://127.0.0.1:PORT/metrics, or "" while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            text: str = answer.read().decode()
            return text
    except OSError:
        return ""
