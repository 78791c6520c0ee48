"""Start real `jobkit worker` processes for tests, and end them (only them) by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def start_worker(
    backend: str,
    ledger: Path,
    *args: str,
    app: str = "tests.apps.ledger:app",
    log: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `jobkit worker`; its log (stderr) goes to `log` if given."""
    env = dict(os.environ, JOBKIT_TEST_LEDGER=str(ledger), PYTHONPATH=str(ROOT))
    stderr = log.open("ab") if log is not None else None
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobkit.cli.main",
            "--app",
            app,
            "--backend",
            backend,
            "worker",
            *args,
        ],
        cwd=ROOT,
        env=env,
        stderr=stderr,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    """Signal the worker's whole process group (the supervisor and its job processes)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


@contextmanager
def running_worker(backend: str, ledger: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(backend, ledger, *args)
    try:
        yield proc
    finally:
        kill_group(proc)
        proc.wait(timeout=30)


def jobkit_cli(backend: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the `jobkit` command against `backend`; returns its exit code and output."""
    return jobkit_command("--backend", backend, *args, timeout=timeout)


def jobkit_command(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the `jobkit` command with `args` (and `env` added to ours) from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "jobkit.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def run_conformance(
    url: str, tmp_path: Path, *extra: str, timeout: float = 600
) -> tuple[int, dict[str, Any], str]:
    """Run `jobkit-conformance run` on `url`; its exit code, JSON report and output."""
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", url, "-q",
         "--workdir", str(tmp_path / "work"), "--json", str(report), *extra],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip
    data = json.loads(report.read_text()) if report.exists() else {}
    return proc.returncode, data, proc.stdout + proc.stderr
