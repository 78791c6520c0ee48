"""`jobkit dlq list | replay | purge QUEUE`: the dead-letter queue of one queue."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

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
    rp.set_defaults(run=run_replay)
    pg = actions.add_parser("purge", help="delete the dead letters of a queue")
    pg.add_argument("queue")
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
    table = Table(title=f"dead letters of {args.queue}: {len(letters)}")
    for column in ("id", "dead at", "deliveries", "reason"):
        table.add_column(column)
    for d in letters:
        dead_at = d.dead_at.strftime("%Y-%m-%d %H:%M:%S") if d.dead_at else "?"
        table.add_row(d.id, dead_at, str(d.deliveries), d.reason)
    Console().print(table)
    return 0


def run_replay(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        count = backend.replay(args.queue, ids=args.ids)
    finally:
        backend.close()
    print(f"replayed {count} dead letter(s) to {args.queue}")
    return 0


def run_purge(args: argparse.Namespace) -> int:
    backend = open_configured_backend(args)
    try:
        count = backend.purge(args.queue)
    finally:
        backend.close()
    print(f"purged {count} dead letter(s) of {args.queue}")
    return 0
