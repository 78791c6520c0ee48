"""A local TCP port with nothing listening, for "broker unreachable" URLs."""

from __future__ import annotations

import socket


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
