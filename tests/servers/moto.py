"""moto's SQS in server mode (real HTTP) on 127.0.0.1, on a free port of its own.

Started as a subprocess we own (``python -m moto.server``) and stopped by its PID. Needs
``moto[server]`` in the test environment.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerProcess, launch

# moto needs some credentials and a region; these are fake and only ever sent to our moto.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer(ServerProcess):
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, **options: str) -> str:
        """An ``sqs://`` backend URL pointing at this server."""
        query = "&".join(
            f"{k}={v}" for k, v in {"region": "us-east-1", "endpoint_url": self.endpoint}.items()
        )
        extra = "&".join(f"{k}={v}" for k, v in options.items())
        return f"sqs://?{query}" + (f"&{extra}" if extra else "")


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/data.json", timeout=1):
            return True
    except OSError:
        return False


def start_moto(timeout: float = 30.0) -> MotoServer:
    """Start moto's server and wait until it answers HTTP. Raises RuntimeError if it cannot."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise RuntimeError(
            "moto's server is not installed; install it with: pip install 'moto[server]==5.2.5'"
        )

    def argv(port: int, directory: Path) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]

    port, process, directory = launch("moto", argv, _answers, timeout=timeout)
    return MotoServer(port=port, process=process, directory=directory)
