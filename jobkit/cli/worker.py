"""`jobkit worker`: serve jobs until SIGTERM (graceful) or a second signal (immediate)."""

from __future__ import annotations

import argparse
import functools
import logging
import os
from datetime import timedelta
from typing import Any

from jobkit.backend import WorkerOptions
from jobkit.cli._common import (
    backend_url,
    open_app,
    open_configured_backend,
    seconds,
    seconds_or_zero,
)
from jobkit.cli._logging import export_to_children
from jobkit.cli._metrics import MetricsServer
from jobkit.redact import redact_url

log = logging.getLogger(__name__)


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser("worker", help="run a worker")
    p.add_argument("-q", "--queue", action="append", dest="queues", help="queue to serve (repeat)")
    p.add_argument(
        "-c", "--concurrency", type=int, default=os.cpu_count() or 1, help="job processes"
    )
    p.add_argument("--prefetch", type=int, default=1, help="messages leased ahead per process")
    p.add_argument("--lease", type=seconds, default=30.0, help="lease (visibility timeout), s")
    p.add_argument("--grace", type=seconds_or_zero, default=30.0, help="SIGTERM grace period, s")
    p.add_argument("--poll", type=seconds, default=1.0, help="longest wait per receive, s")
    p.add_argument("--max-jobs", type=int, help="stop after this many jobs ended")
    p.add_argument(
        "--max-jobs-per-child",
        type=int,
        help="replace each job process after this many jobs (frees what job code leaks)",
    )
    p.add_argument("--burst", action="store_true", help="stop when the queues are empty")
    p.add_argument(
        "--unknown-job-timeout",
        type=seconds,
        default=3600.0,
        help="how long a job this app does not define (or a newer envelope) waits for a worker "
        "that knows it before it is dead-lettered, s",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus metrics at http://ADDRESS:PORT/metrics (needs jobkit[metrics])",
    )
    p.add_argument(
        "--metrics-address",
        default="127.0.0.1",
        help="interface for --metrics-port (default 127.0.0.1; 0.0.0.0 for every interface)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    export_to_children(verbose=args.verbose, log_format=args.log_format)
    metrics = None
    if args.metrics_port is not None:
        metrics = MetricsServer(port=args.metrics_port, address=args.metrics_address)
        metrics.prepare()  # before the app is imported: it may import prometheus-client
    try:
        return _serve(args, metrics)
    finally:
        if metrics is not None:
            metrics.close()


def _serve(args: argparse.Namespace, metrics: MetricsServer | None) -> int:
    path, app = open_app(args)
    queues = tuple(args.queues or sorted({job.queue for job in app.jobs.values()}) or ["default"])
    options = WorkerOptions(
        app_path=path,
        queues=queues,
        concurrency=args.concurrency,
        prefetch=args.prefetch,
        lease=timedelta(seconds=args.lease),
        grace=timedelta(seconds=args.grace),
        poll=timedelta(seconds=args.poll),
        max_jobs=args.max_jobs,
        max_jobs_per_child=args.max_jobs_per_child,
        burst=args.burst,
        unknown_job_timeout=timedelta(seconds=args.unknown_job_timeout),
    )
    log.info(
        "worker for %s on %s, queues %s, %d processes",
        path,
        redact_url(backend_url(args)),
        ", ".join(queues),
        options.concurrency,
    )
    status_backend = None
    try:
        if metrics is not None:
            status_backend = open_configured_backend(args)
            metrics.start(functools.partial(status_backend.stats, list(queues)))
            log.info("metrics at http://%s:%d/metrics", args.metrics_address, args.metrics_port)
        app.backend.run_worker(app, options)
    finally:
        app.close()
        if metrics is not None:
            metrics.close()  # stop serving before the backend it reads is closed
        if status_backend is not None:
            status_backend.close()
    log.info("worker stopped")
    return 0
