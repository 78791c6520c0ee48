"""`jobkit dlq list | replay | purge QUEUE`: the dead-letter queue of one queue.

Replay and purge of a large dead-letter queue can take a while: on a terminal they show a
progress display on stderr (how many dead letters there are, elapsed time; the backends report
no progress within the one call, so the bar pulses until it is done). ``--json`` prints the
result as JSON on every subcommand.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from jobkit.backend import Backend
from jobkit.cli._common import open_configured_backend


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser("dlq", help="dead-letter queues")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list dead letters, oldest first")
    ls.add_argument("queue")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    rp = actions.add_parser("replay", help="move dead letters back to their queue")
    rp.add_argument("queue")
    rp.add_argument("--id", action="append", dest="ids", help="only this message id (repeat)")
    rp.add_argument("--json", action="store_true", help="print the count as JSON")
    rp.set_defaults(run=run_replay)
    pg = actions.add_parser("purge", help="delete the dead letters of a queue")
    pg.add_argument("queue")
    pg.add_argument("--json", action="store_true", help="print the count as JSON")
    pg.set_defaults(run=run_purge)


def run_list(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        letters = backend.dead_letters(args.queue, limit=args.limit)
    finally:
        backend.close()
    if args.json:
        rows = [
            {
                "queue": d.queue,
                "id": d.id,
                "reason": d.reason,
                "dead_at": d.dead_at.isoformat() if d.dead_at else None,
                "deliveries": d.deliveries,
                "body": d.body.decode("utf-8", errors="replace"),
            }
            for d in letters
        ]
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console  # imported by the commands that print with it
    from rich.table import Table

    table = Table(title=f"dead letters of {args.queue}: {len(letters)}")
    for column in ("id", "dead at", "deliveries", "reason"):
        table.add_column(column)
    for d in letters:
        dead_at = d.dead_at.strftime("%Y-%m-%d %H:%M:%S") if d.dead_at else "?"
        table.add_row(d.id, dead_at, str(d.deliveries), d.reason)
    Console().print(table)
    return 0


def _with_progress(verb: str, queue: str, dead: int, call: Callable[[], int]) -> int:
    """`call()`, with a progress display on stderr when it is a terminal."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(
        *columns, console=console, transient=True, disable=not console.is_terminal
    ) as bar:
        task = bar.add_task(f"{verb} {dead} dead letter(s) of {queue}", total=None)
        count = call()
        bar.update(task, total=count, completed=count)
    return count


def _dead(backend: Backend, queue: str) -> int:
    return sum(s.dead for s in backend.stats([queue]))


def run_replay(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        dead = len(args.ids) if args.ids else _dead(backend, args.queue)
        count = _with_progress(
            "replaying", args.queue, dead, lambda: backend.replay(args.queue, ids=args.ids)
        )
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"queue": args.queue, "replayed": count}))
    else:
        print(f"replayed {count} dead letter(s) to {args.queue}")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        dead = _dead(backend, args.queue)
        count = _with_progress("purging", args.queue, dead, lambda: backend.purge(args.queue))
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"queue": args.queue, "purged": count}))
    else:
        print(f"purged {count} dead letter(s) of {args.queue}")
    return 0
