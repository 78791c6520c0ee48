"""Real broker servers for the tests, started on 127.0.0.1 on free ports and stopped by PID.

Each module here starts one kind of server as a subprocess we own. Under CI=true a server that
cannot be started fails the test session; locally the tests that need it are reported as errors
with the reason (never skipped silently).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass
class ServerProcess:
    """A server we started: its port, its process and its scratch directory."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL) and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


def launch(
    name: str,
    argv: Callable[[int, Path], list[str]],
    answers: Callable[[int], bool],
    *,
    timeout: float,
) -> tuple[int, subprocess.Popen[bytes], Path]:
    """Start `argv(port, directory)` on a free port with its log in a fresh directory, and wait
    until `answers(port)`. Raises RuntimeError with the log's tail if it exits or times out."""
    directory = Path(tempfile.mkdtemp(prefix=f"jobkit-{name}-"))
    port = free_port()
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            argv(port, directory), stdout=log, stderr=subprocess.STDOUT, cwd=directory
        )
    deadline = time.monotonic() + timeout
    while not answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            output = log_path.read_text(errors="replace")[-2000:]
            ServerProcess(port=port, process=process, directory=directory).stop()
            raise RuntimeError(f"{name} did not start on port {port}: {output}")
        time.sleep(0.05)
    return port, process, directory
