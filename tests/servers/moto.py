"""moto's SQS in server mode (real HTTP) on 127.0.0.1, on a free port of its own.

Started as a subprocess we own (``python -m moto.server``) and stopped by its PID. Needs
``moto[server]`` in the test environment.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.servers import free_port

# moto needs some credentials and a region; these are fake and only ever sent to our moto.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

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
    directory = Path(tempfile.mkdtemp(prefix="jobkit-moto-"))
    port = free_port()
    log = open(directory / "moto.log", "wb")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
    )
    log.close()
    server = MotoServer(port=port, process=process, directory=directory)
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (directory / "moto.log").read_text(errors="replace")[-2000:]
            server.stop()
            raise RuntimeError(f"moto server did not start on port {port}: {output}")
        time.sleep(0.1)
    return server
