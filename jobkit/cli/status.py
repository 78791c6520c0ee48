"""`jobkit status`: depth per queue (ready, in flight, delayed, dead), once or live.

``--watch`` redraws the table every ``--interval`` seconds (1 by default) until Ctrl-C, with
rates: how fast the ready and dead counts change (per second, between the last two reads).
With ``--json`` each read is one JSON line instead (for scripts); ``--count N`` stops after
N reads.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from jobkit.capabilities import Capabilities
from jobkit.cli._common import backend_url, open_configured_backend, seconds
from jobkit.records import QueueStats
from jobkit.redact import redact_url

if TYPE_CHECKING:  # rich is imported when a table is printed, not by every command
    from rich.table import Table


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser("status", help="queue depths")
    p.add_argument("-q", "--queue", action="append", dest="queues", help="only these queues")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C, with rates")
    p.add_argument("--interval", type=seconds, default=1.0, help="--watch: seconds per refresh")
    p.add_argument("--count", type=int, help="--watch: stop after this many refreshes")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        if args.watch:
            return _watch(args, backend)
        stats = backend.stats(args.queues)
        caption = _caption(backend.capabilities)
    finally:
        backend.close()
    if args.json:
        print(json.dumps([asdict(s) for s in stats], indent=2))
        return 0
    from rich.console import Console

    Console().print(_table(args, stats, None, 0.0, caption))
    return 0


def _caption(caps: Capabilities) -> str | None:
    """What the table's in-flight column cannot show on this backend, if anything."""
    if caps.in_flight_visible:
        return None
    return (
        f"in flight: only what this process holds; {caps.name} does not show the jobs other "
        "processes (workers) hold unacknowledged, as ready or in flight"
    )


def _rates(
    stats: Sequence[QueueStats], before: Sequence[QueueStats] | None, elapsed: float
) -> dict[str, tuple[float, float]]:
    """Per queue: (ready, dead) change per second since `before`."""
    if before is None or elapsed <= 0:
        return {}
    old = {s.queue: s for s in before}
    return {
        s.queue: ((s.ready - old[s.queue].ready) / elapsed, (s.dead - old[s.queue].dead) / elapsed)
        for s in stats
        if s.queue in old
    }


def _table(
    args: argparse.Namespace,
    stats: Sequence[QueueStats],
    before: Sequence[QueueStats] | None,
    elapsed: float,
    caption: str | None,
) -> Table:
    from rich.table import Table

    table = Table(title=f"jobkit status: {redact_url(backend_url(args))}", caption=caption)
    columns = ["queue", "ready", "in flight", "delayed", "dead"]
    if args.watch:
        columns += ["ready/s", "dead/s"]
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    rates = _rates(stats, before, elapsed)
    for s in stats:
        delayed = f"{s.delayed} (≤{s.stale} stale)" if s.stale else str(s.delayed)
        row = [s.queue, str(s.ready), str(s.in_flight), delayed, str(s.dead)]
        if args.watch:
            ready, dead = rates.get(s.queue, (0.0, 0.0))
            row += [f"{ready:+.1f}", f"{dead:+.1f}"]
        table.add_row(*row)
    return table


def _watch(args: argparse.Namespace, backend: Any) -> int:
    """Read every `args.interval` s until Ctrl-C or `args.count` reads. Blocks."""
    from rich.console import Console
    from rich.live import Live

    before: list[QueueStats] | None = None
    last = time.monotonic()
    reads = 0
    caption = _caption(backend.capabilities)
    live = None if args.json else Live(console=Console(), auto_refresh=False)
    try:
        if live is not None:
            live.start()
        while args.count is None or reads < args.count:
            if reads:
                time.sleep(max(0.0, last + args.interval - time.monotonic()))
            stats = backend.stats(args.queues)
            now = time.monotonic()
            elapsed, last = now - last, now
            reads += 1
            if live is None:
                rates = _rates(stats, before, elapsed)
                rows = [
                    {**asdict(s), "ready_per_s": r[0], "dead_per_s": r[1]}
                    for s in stats
                    for r in [rates.get(s.queue, (0.0, 0.0))]
                ]
                print(json.dumps({"at": time.time(), "queues": rows}), flush=True)
            else:
                live.update(_table(args, stats, before, elapsed, caption), refresh=True)
            before = stats
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    return 0
