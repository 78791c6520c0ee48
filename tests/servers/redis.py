"""A real redis-server on 127.0.0.1, on a free port of its own, in a temporary directory.

Started as a subprocess we own and stopped by its PID. It keeps an append-only file in its
directory (written through at SIGTERM, which is how `stop_broker()` stops it), so
`stop_broker()` / `start_broker()` restart it in place with its data: see `tests.servers`.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerProcess, launch


@dataclass
class RedisServer(ServerProcess):
    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(timeout: float = 15.0, *, persistent: bool = True) -> RedisServer:
    """Start redis-server and wait until it answers PING. Raises RuntimeError if it cannot.
    `persistent=False` (benchmarks): no append-only file, so a restart loses the data."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError(
            "redis-server is not installed; install it with: apt-get install -y redis-server"
        )

    def argv(port: int, directory: Path) -> list[str]:
        return [
            exe,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "yes" if persistent else "no",
            "--appendfsync", "everysec",
            "--dir", str(directory),
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    server = launch("redis", argv, _answers, timeout=timeout)
    return RedisServer(**vars(server))
