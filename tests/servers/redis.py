"""A real redis-server on 127.0.0.1, on a free port of its own, in a temporary directory.

Started as a subprocess we own and stopped by its PID. No persistence (``--save ''``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

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


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout: float = 15.0) -> RedisServer:
    """Start redis-server and wait until it answers PING. Raises RuntimeError if it cannot."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server is not installed; install it with: apt-get install -y redis-server"
        )
    directory = Path(tempfile.mkdtemp(prefix="jobkit-redis-"))
    port = free_port()
    log = open(directory / "redis.log", "wb")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [
            exe,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )  # fmt: skip
    log.close()
    server = RedisServer(port=port, process=process, directory=directory)
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (directory / "redis.log").read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"redis-server did not start on port {port}: {output}")
        time.sleep(0.05)
    return server
