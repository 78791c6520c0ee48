"""What a worker process runs around jobs besides the app's own middleware: the built-in
middleware the ``jobkit worker`` command asked for, and its logging settings.

The command passes them to its job processes (and to a Celery worker's pool children) through
the environment, because those processes load the app themselves:

* ``JOBKIT_METRICS_DIR``: Prometheus metrics are on; the multiprocess directory they write to
  (`jobkit.metrics`). The command sets ``PROMETHEUS_MULTIPROC_DIR`` to the same directory.
* ``JOBKIT_LOG_LEVEL`` (``INFO`` or ``DEBUG``), ``JOBKIT_LOG_FORMAT`` (``text`` or ``json``).
"""

from __future__ import annotations

import os

from jobkit.logcontext import LogFormat, configure_logging
from jobkit.middleware import Hooks, Middleware, hooks_of

METRICS_DIR = "JOBKIT_METRICS_DIR"


def worker_hooks(app: object) -> Hooks:
    """The hooks a worker process runs: the built-in ones switched on through the environment
    (outermost), then the app's middleware in its order."""
    own = hooks_of(app).middleware
    builtin: list[Middleware] = []
    if os.environ.get(METRICS_DIR):
        from jobkit.metrics import PrometheusMetrics  # prometheus-client: an optional extra

        if not any(isinstance(m, PrometheusMetrics) for m in own):  # the app has its own
            # registered nowhere: in multiprocess mode the samples go to the files, and a second
            # worker in this process must not clash with the first in a registry
            builtin.append(PrometheusMetrics(registry=None))
    return Hooks([*builtin, *own])


def configure_child_logging() -> None:
    """Logging of a job process, as its ``jobkit worker`` command was configured."""
    log_format: LogFormat = "json" if os.environ.get("JOBKIT_LOG_FORMAT") == "json" else "text"
    configure_logging(verbose=os.environ.get("JOBKIT_LOG_LEVEL") == "DEBUG", log_format=log_format)
