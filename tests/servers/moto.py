"""moto's SQS in server mode (real HTTP) on 127.0.0.1, on a free port of its own.

Started as a subprocess we own (``python -m moto.server``, through `_moto_main`, which takes out
moto's per-message cost in the depth of a queue) and stopped by its PID. Needs
``moto[server]`` in the test environment.

Clients reach it through a loopback `TcpProxy`: moto keeps its queues in memory only, so a real
restart would lose them; `stop_broker()` cuts the proxy instead (connections refused, open ones
cut) and `start_broker()` lets connections through again, on the same port, with the same queues.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.servers import ServerProcess, free_port, launch
from tests.servers.proxy import TcpProxy

# moto needs some credentials and a region; these are fake and only ever sent to our moto.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class MotoServer(ServerProcess):
    proxy: TcpProxy | None = None

    @property
    def endpoint(self) -> str:
        """Where clients connect: the proxy's port if proxied (`port` is moto's own)."""
        return f"http://127.0.0.1:{self.proxy.port if self.proxy else self.port}"

    def _proxy(self) -> TcpProxy:
        if self.proxy is None:
            raise RuntimeError("this moto server has no proxy: start it with start_moto()")
        return self.proxy

    def stop_broker(self) -> None:
        """Simulate an outage: the endpoint refuses connections; open ones are cut."""
        self._proxy().cut()

    def start_broker(self, timeout: float = 30.0) -> None:
        """End the outage: the endpoint accepts connections again, same port, same queues."""
        self._proxy().resume()

    def stop(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        super().stop()

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


def start_moto(timeout: float = 30.0, *, proxied: bool = True) -> MotoServer:
    """Start moto's server and wait until it answers HTTP. Raises RuntimeError if it cannot.
    `proxied=False`: clients connect to moto directly (benchmarks), and there is no outage
    control."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise RuntimeError(
            "moto's server is not installed; install it with: pip install 'moto[server]==5.2.5'"
        )

    def argv(port: int, directory: Path) -> list[str]:
        main = str(Path(__file__).with_name("_moto_main.py"))  # moto.server, minus hot spots
        # -P: its directory (this one, with moto.py) is not put first on sys.path
        return [sys.executable, "-P", main, "-H", "127.0.0.1", "-p", str(port)]

    server = launch("moto", argv, _answers, timeout=timeout)
    return MotoServer(**vars(server), proxy=_proxy_to(server.port) if proxied else None)


def _proxy_to(upstream: int) -> TcpProxy:
    for _ in range(3):  # another process may take the free port before the proxy binds it
        try:
            return TcpProxy(upstream, free_port())
        except OSError:
            continue
    return TcpProxy(upstream, free_port())
