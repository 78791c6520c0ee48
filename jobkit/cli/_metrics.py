"""``jobkit worker --metrics-port N``: Prometheus metrics served from the worker's main process.

`MetricsServer.prepare` must run before the app (or anything that imports prometheus-client) is
imported: it points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh private directory, which every
process of the worker (job processes, Celery's pool children) inherits. `start` serves the
multiprocess registry plus the backend's queue depths; `close` stops serving and removes the
directory. See `jobkit.metrics` for the metric names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from jobkit.errors import ConfigurationError
from jobkit.records import QueueStats
from jobkit.worker._observe import METRICS_DIR


class MetricsServer:
    """One worker's metrics endpoint. Not thread-safe; `close` is idempotent."""

    def __init__(self, *, port: int, address: str) -> None:
        self.port = port
        self.address = address
        self.directory: str | None = None
        self._server: Any = None

    def prepare(self) -> None:
        """Make the multiprocess directory and export it to the processes started from here."""
        self.directory = tempfile.mkdtemp(prefix="jobkit-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.directory
        os.environ[METRICS_DIR] = self.directory

    def start(self, stats: Callable[[], Sequence[QueueStats]]) -> None:
        """Serve ``/metrics`` on `address`:`port` from a daemon thread. Raises
        `ConfigurationError` if prometheus-client is missing or the port cannot be bound."""
        assert self.directory is not None, "prepare() first"
        try:
            from prometheus_client import start_http_server

            from jobkit.metrics import QueueCollector, multiprocess_registry
        except ImportError as exc:
            raise ConfigurationError(
                f"--metrics-port {self.port} was asked, but prometheus-client is not installed "
                f"({exc}); install it with pip install 'jobkit[metrics]'"
            ) from exc
        registry = multiprocess_registry(self.directory, [QueueCollector(stats)])
        try:
            self._server, _ = start_http_server(self.port, addr=self.address, registry=registry)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port {self.port}: cannot serve metrics on {self.address}:{self.port} "
                f"({exc}); pick a free port"
            ) from exc

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        os.environ.pop(METRICS_DIR, None)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
