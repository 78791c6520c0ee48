"""`jobkit migrate`: move jobs between two backends, with a progress bar and a reconciliation.

Exit codes: 0 every job accounted for, 1 some job left at the source (the table says why),
2 usage, configuration, or a backend that cannot migrate, 3 a broker unreachable.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobkit.cli._common import seconds
from jobkit.errors import ConfigurationError
from jobkit.migrate import Migration, QueueReport, Report, migrate
from jobkit.migrate._engine import RUNNING
from jobkit.redact import redact_url
from jobkit.registry import open_backend

if TYPE_CHECKING:  # rich is imported by the commands that print with it, not by every command
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser(
        "migrate", help="move jobs from one backend to another without losing one"
    )
    p.add_argument("--from", dest="source", required=True, help="source backend URL")
    p.add_argument("--to", dest="target", required=True, help="target backend URL")
    p.add_argument("-q", "--queue", action="append", dest="queues", help="only these queues")
    p.add_argument("--include-dead", action="store_true", help="move dead letters too")
    p.add_argument("--dry-run", action="store_true", help="count, move nothing")
    p.add_argument("--batch", type=_positive, default=500, help="jobs per batch (default 500)")
    p.add_argument(
        "--lease", type=seconds, default=300.0, help="export lease per batch (default 5m)"
    )
    p.add_argument(
        "--wait",
        type=_non_negative,
        default=30.0,
        help="how long to wait for jobs source workers are running (default 30s)",
    )
    p.add_argument("--json", dest="json_file", help="write the reconciliation as JSON here")
    p.set_defaults(run=run)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of 1 or more")
    return number


def _non_negative(value: str) -> float:
    return 0.0 if value.strip() in ("0", "0s") else seconds(value)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    options = Migration(
        queues=tuple(args.queues or ()),
        include_dead=args.include_dead,
        dry_run=args.dry_run,
        batch=args.batch,
        lease=timedelta(seconds=args.lease),
        wait=timedelta(seconds=args.wait),
    )
    if _same_place(args.source, args.target):
        raise ConfigurationError(
            f"--from and --to name the same backend ({redact_url(args.source)}): every job "
            "would look present at the target and be deleted; give two different backends"
        )
    console = Console(stderr=True)
    source = open_backend(args.source)
    try:
        target = open_backend(args.target)
        try:
            with _Bars(console) as bars:
                report = migrate(
                    source,
                    target,
                    options,
                    source_name=redact_url(args.source),
                    target_name=redact_url(args.target),
                    on_progress=bars.update,
                )
        finally:
            target.close()
    finally:
        source.close()
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    for q in report.queues:
        if q.waited_for:
            console.print(
                f"queue {q.queue}: waited for {q.waited_for} job(s) running on source workers "
                f"(still running at the end: {q.left[RUNNING]})"
            )
        if q.stale_at_source:
            console.print(
                f"queue {q.queue}: the source still counts up to {q.stale_at_source} delayed "
                "message(s) that may be copies of jobs already moved (a migration into it was "
                "killed between a send and its markers); they are not jobs, and are dropped "
                "when they fall due"
            )
    Console().print(_table(report))
    if args.json_file:
        Path(args.json_file).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return 0 if report.ok else 1


def _same_place(a: str, b: str) -> bool:
    """Whether two URLs name the same storage (the same string, or one SQLite file)."""
    if a == b:
        return True
    if a.startswith("sqlite:") and b.startswith("sqlite:"):
        from jobkit.sqlite import parse_url

        paths = [os.path.realpath(parse_url(url).path) for url in (a, b)]
        return paths[0] == paths[1]
    return False


class _Bars:
    """One rich progress bar per queue: moved / total, rate, ETA."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} jobs/s"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> _Bars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def update(self, queue: QueueReport) -> None:
        task = self.tasks.get(queue.queue)
        if task is None:
            task = self.tasks[queue.queue] = self.progress.add_task(
                queue.queue, total=max(queue.expected, 1), rate="-"
            )
        total = max(queue.expected, queue.found)
        state = self.progress.tasks[self.progress.task_ids.index(task)]
        speed = state.finished_speed or state.speed
        self.progress.update(
            task,
            completed=queue.moved,
            total=total,
            rate=f"{speed:,.0f}" if speed else "-",
        )


def _table(report: Report) -> Table:
    from rich.table import Table

    title = f"jobkit migrate {report.source} -> {report.target}"
    table = Table(title=title + (" (dry run: nothing moved)" if report.dry_run else ""))
    columns = ("queue", "found at source", "copied", "skipped (present)", "left", "at target")
    for column in columns:
        table.add_column(column, justify="left" if column == "queue" else "right")
    table.add_column("why left")
    for q in report.queues:
        why = "; ".join(f"{n}: {reason}" for reason, n in sorted(q.left.items()))
        table.add_row(
            q.queue,
            str(q.found),
            str(q.copied),
            str(q.skipped),
            str(sum(q.left.values())),
            str(q.at_target),
            why or "-",
        )
    return table
