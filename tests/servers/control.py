"""Broker control for conformance runs against the test servers.

The conformance CLI runs in a subprocess and calls its ``--broker-control CMD`` as
``CMD stop`` / ``CMD start``; the servers' ``stop_broker()`` / ``start_broker()`` live in the
test process. `relay(server)` serves those two calls on a Unix socket in a private directory
and gives the command that reaches it::

    with relay(redis_server) as command:
        run_conformance(url, tmp_path, "--broker-control", command)

``python -m tests.servers.control SOCKET stop|start`` is that command: it exits 0 once the
server has done it, 1 with the error otherwise.
"""

from __future__ import annotations

import shlex
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol

TIMEOUT = 180.0  # longest a stop or start may take (rabbitmq's start_app can be slow)


class Restartable(Protocol):
    def stop_broker(self) -> None: ...

    def start_broker(self) -> None: ...


def _serve(listener: socket.socket, server: Restartable) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return  # closed
        with conn:
            verb = conn.recv(16).decode().strip()
            try:
                if verb == "stop":
                    server.stop_broker()
                elif verb == "start":
                    server.start_broker()
                else:
                    raise ValueError(f"unknown verb {verb!r}: use stop or start")
            except Exception as exc:
                conn.sendall(f"error: {type(exc).__name__}: {exc}".encode())
            else:
                conn.sendall(b"ok")


@contextmanager
def relay(server: Restartable) -> Iterator[str]:
    """Serve `server`'s stop/start while the block runs; yields the command to call."""
    directory = Path(tempfile.mkdtemp(prefix="jobkit-control-"))
    path = directory / "control.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(4)
    thread = threading.Thread(target=_serve, args=(listener, server), daemon=True)
    thread.start()
    try:
        yield shlex.join([sys.executable, "-m", "tests.servers.control", str(path)])
    finally:
        listener.close()
        thread.join(timeout=5)
        with suppress(OSError):
            path.unlink()
        with suppress(OSError):
            directory.rmdir()


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("stop", "start"):
        print("usage: python -m tests.servers.control SOCKET stop|start", file=sys.stderr)
        return 2
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(TIMEOUT)
        conn.connect(argv[0])
        conn.sendall(argv[1].encode())
        reply = conn.recv(4096).decode()
    if reply != "ok":
        print(reply, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
