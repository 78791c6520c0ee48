"""Real broker servers for the tests, started on 127.0.0.1 on free ports and stopped by PID.

Each module here starts one kind of server as a subprocess we own. Under CI=true a server that
cannot be started fails the test session; locally the tests that need it are reported as errors
with the reason (never skipped silently).
"""

from __future__ import annotations

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"
