"""`jobkit status`: depth per queue (ready, in flight, delayed, dead)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from jobkit.cli._common import backend_url, open_configured_backend
from jobkit.redact import redact_url


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser("status", help="queue depths")
    p.add_argument("-q", "--queue", action="append", dest="queues", help="only these queues")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        stats = backend.stats(args.queues)
    finally:
        backend.close()
    if args.json:
        print(json.dumps([asdict(s) for s in stats], indent=2))
        return 0
    table = Table(title=f"jobkit status: {redact_url(backend_url(args))}")
    for column in ("queue", "ready", "in flight", "delayed", "dead"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for s in stats:
        table.add_row(s.queue, str(s.ready), str(s.in_flight), str(s.delayed), str(s.dead))
    Console().print(table)
    return 0
