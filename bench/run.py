"""Every backend's benchmark in one run and one table: jobkit beside the native system.

Discovers each ``bench/<name>_bench.py`` that defines ``measure(*, quick: bool)`` (the
convention of ``bench/_rows.py``) and runs them one after another, each in a child process of
its own (so one module's servers, globals or crash cannot touch another's). For every backend
it prints jobkit's row, each native system's row, and the ratio jobkit / native per figure.

    .venv/bin/python bench/run.py                  # the full run (tens of minutes)
    .venv/bin/python bench/run.py --quick          # smoke run: small counts, numbers meaningless
    .venv/bin/python bench/run.py --only sqlite celery+redis --json results.json
    .venv/bin/python bench/run.py --json results.json --markdown table.md   # for bench/README.md

A module that fails (import error, exception, crash, timeout) shows as an error row; the others
still run, and the exit status is 1. A module without a conforming ``measure`` is listed under
the table as not measured (not an error). Exit status 2: an ``--only`` name matches no module.
Speed figures live here, never in tests.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

sys.path[:0] = [str(HERE), str(ROOT)]

from _rows import Measurement  # noqa: E402

FIGURES = (
    ("enqueue_per_s", "enqueue/s"),
    ("enqueue_many_per_s", "enqueue_many/s"),
    ("drain_per_s", "drain/s"),
    ("latency_p50_ms", "p50 ms"),
    ("latency_p99_ms", "p99 ms"),
)


@dataclass(frozen=True, kw_only=True)
class ModuleRun:
    """What one bench module gave: its rows, or why it has none."""

    module: str
    status: str
    """``"ok"``, ``"error"`` (it failed: see `error`) or ``"not measured"`` (no conforming
    ``measure``: see `error` for why)."""
    seconds: float
    rows: tuple[Measurement, ...] = ()
    error: str = ""


# -- discovery and running ---------------------------------------------------------------------


def discover() -> list[str]:
    """Names (``sqlite`` for ``sqlite_bench.py``) of every bench module, sorted."""
    return sorted(p.name.removesuffix("_bench.py") for p in HERE.glob("*_bench.py"))


def selected(names: Sequence[str], only: Sequence[str]) -> list[str]:
    """The modules `only` asks for: a module name, or a backend scheme whose first part is one
    (``celery+redis`` selects ``celery``). Raises SystemExit(2) for a name matching none."""
    if not only:
        return list(names)
    unknown = [o for o in only if o.split("+")[0] not in names]
    if unknown:
        print(
            f"--only {' '.join(unknown)}: no such bench module; known: {', '.join(names)} "
            "(or a backend scheme such as celery+redis)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return [n for n in names if any(o.split("+")[0] == n for o in only)]


def keep_row(row: Measurement, module: str, only: Sequence[str]) -> bool:
    """`--only celery+redis` keeps that backend's rows; `--only celery` keeps all the module's.
    A backend's variants count as the backend: `--only rq+redis` keeps ``rq+redis (fork)``."""
    wanted = [o for o in only if o.split("+")[0] == module]
    return not wanted or module in wanted or row.backend.split(" (")[0] in wanted


def conforming_measure(module: Any) -> tuple[Any, str]:
    """(the module's ``measure``, "") if it follows the convention, else (None, why not)."""
    measure = getattr(module, "measure", None)
    if measure is None:
        return None, "no measure()"
    params = inspect.signature(measure).parameters
    quick = params.get("quick")
    others = [p for n, p in params.items() if n != "quick" and p.default is inspect.Parameter.empty]
    if quick is None or quick.kind is not inspect.Parameter.KEYWORD_ONLY or others:
        return None, f"measure{inspect.signature(measure)} is not measure(*, quick: bool)"
    return measure, ""


def run_here(name: str, *, quick: bool) -> ModuleRun:
    """Import ``<name>_bench`` and call its ``measure`` in this process."""
    t0 = time.monotonic()
    try:
        module = importlib.import_module(f"{name}_bench")
        measure, why = conforming_measure(module)
        if measure is None:
            return ModuleRun(module=name, status="not measured", seconds=0.0, error=why)
        rows = measure(quick=quick)
        if not isinstance(rows, list) or not all(isinstance(r, Measurement) for r in rows):
            raise TypeError(f"measure() returned {type(rows).__name__}, not list[Measurement]")
        if not rows:
            raise ValueError("measure() returned no rows")
    except Exception as exc:  # a broken bench is reported as a row, the run goes on
        traceback.print_exc()
        where = traceback.extract_tb(exc.__traceback__)[-1]
        error = f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
        return ModuleRun(
            module=name, status="error", seconds=time.monotonic() - t0, error=error[:500]
        )
    return ModuleRun(module=name, status="ok", seconds=time.monotonic() - t0, rows=tuple(rows))


def run_child(name: str, *, quick: bool, timeout: float) -> ModuleRun:
    """Run one module in a child process (``run.py --child``); never raises."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-run-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__)), "--child", name, "--child-out", str(out)]
        if quick:
            cmd.append("--quick")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]))
        # its own process group, so that a timeout also ends the servers it started
        child = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True)
        try:
            failed = f"the bench process exited with status {child.wait(timeout=timeout)}"
        except subprocess.TimeoutExpired:
            _end_group(child)
            failed = f"the bench did not finish within {timeout:.0f} s (killed)"
        except KeyboardInterrupt:  # its own session: a ^C here does not reach it
            _end_group(child)
            raise
        if out.exists():
            return from_json(json.loads(out.read_text()))
    return ModuleRun(module=name, status="error", seconds=time.monotonic() - t0, error=failed)


def _end_group(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, SIGKILL after 10 s; waits for the child."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, sig)
        try:
            child.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def to_json(run: ModuleRun) -> dict[str, Any]:
    return dataclasses.asdict(run)


def from_json(data: dict[str, Any]) -> ModuleRun:
    rows = tuple(Measurement(**r) for r in data.pop("rows"))
    return ModuleRun(**data, rows=rows)


# -- the table and the JSON --------------------------------------------------------------------


def ratio(jobkit: float | None, native: float | None) -> float | None:
    return None if jobkit is None or not native else jobkit / native


def ratios(rows: Sequence[Measurement]) -> list[dict[str, Any]]:
    """jobkit / native per figure, for each native system of each backend that has a jobkit
    row. Above 1 is faster for the rates and slower for the latencies."""
    out = []
    for row in rows:
        if row.system == "jobkit":
            continue
        mine = [r for r in rows if r.backend == row.backend and r.system == "jobkit"]
        if mine:
            out.append(
                {"backend": row.backend, "native": row.system}
                | {f: ratio(getattr(mine[0], f), getattr(row, f)) for f, _ in FIGURES}
            )
    return out


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _num(value: float | None, *, ms: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:,.2f}" if ms else f"{value:,.0f}"


def print_table(
    rows: Sequence[Measurement], runs: Sequence[ModuleRun] = (), title: str = ""
) -> None:
    """One table: per backend, jobkit's row, each native row, and jobkit / native."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=title or None, caption="x: jobkit / native (rates: >1 faster; ms: >1 slower)"
    )
    for head in ("backend", "system", "jobs", *(label for _, label in FIGURES), "notes"):
        table.add_column(
            head, justify="left" if head in {"backend", "system", "notes"} else "right"
        )
    by_ratio = {(r["backend"], r["native"]): r for r in ratios(rows)}
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = sorted((r for r in rows if r.backend == backend), key=lambda r: r.system != "jobkit")
        for row in mine:
            cells = [_num(getattr(row, f), ms=f.endswith("_ms")) for f, _ in FIGURES]
            table.add_row(backend, row.system, f"{row.jobs:,}", *cells, row.notes)
            factors = by_ratio.get((backend, row.system))
            if factors:
                table.add_row(
                    "", f"  x {row.system}", "",
                    *(("-" if factors[f] is None else f"{factors[f]:.2f}") for f, _ in FIGURES),
                    "", style="italic",
                )  # fmt: skip
        table.add_section()
    for run in runs:
        if run.status == "error":
            table.add_row(run.module, "ERROR", "", *("" for _ in FIGURES), run.error, style="red")
    Console(width=200).print(table)
    skipped = [f"{r.module}_bench.py ({r.error})" for r in runs if r.status == "not measured"]
    if skipped:
        print("not measured (no measure(*, quick) yet): " + "; ".join(skipped))


def markdown(rows: Sequence[Measurement], runs: Sequence[ModuleRun], title: str) -> str:
    """The table as Markdown (for bench/README.md): the same rows as `print_table`."""
    head = ["backend", "system", "jobs", *(label for _, label in FIGURES), "notes"]
    lines = [f"**{title}**", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    by_ratio = {(r["backend"], r["native"]): r for r in ratios(rows)}
    for backend in dict.fromkeys(r.backend for r in rows):
        mine = sorted((r for r in rows if r.backend == backend), key=lambda r: r.system != "jobkit")
        for row in mine:
            cells = [_num(getattr(row, f), ms=f.endswith("_ms")) for f, _ in FIGURES]
            lines.append(f"| {backend} | {row.system} | {row.jobs:,} | {' | '.join(cells)} | "
                         f"{row.notes} |")  # fmt: skip
            factors = by_ratio.get((backend, row.system))
            if factors:
                cells = [
                    ("-" if factors[f] is None else f"**{factors[f]:.2f}**") for f, _ in FIGURES
                ]
                lines.append(f"| | *jobkit / {row.system}* | | {' | '.join(cells)} | |")
    for run in runs:
        if run.status == "error":
            lines.append(f"| {run.module} | ERROR | |{' |' * len(FIGURES)} {run.error} |")
    lines += ["", "jobkit / native: rates above 1 are faster, latencies above 1 slower."]
    skipped = [f"`{r.module}_bench.py`" for r in runs if r.status == "not measured"]
    if skipped:
        lines.append("Not measured (no `measure(*, quick)` yet): " + ", ".join(skipped) + ".")
    return "\n".join(lines) + "\n"


def standalone(measure: Callable[..., list[Measurement]], doc: str | None) -> None:
    """The ``__main__`` of a bench module: ``[--quick]``, then its rows in the table."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts")
    print_table(measure(quick=parser.parse_args().quick))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: ~1 minute, small counts")
    parser.add_argument("--only", nargs="+", default=[], metavar="BACKEND", help="e.g. sqlite")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results here")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="and the table, as Markdown")
    parser.add_argument(
        "--timeout", type=float, help="seconds per module (default 300 quick, 3600 full)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        result = run_here(args.child, quick=args.quick)
        args.child_out.write_text(json.dumps(to_json(result)))
        return 0 if result.status != "error" else 1

    started = datetime.now(UTC)
    timeout = args.timeout or (300.0 if args.quick else 3600.0)
    runs = []
    for name in selected(discover(), args.only):
        print(f"== {name}_bench.py", flush=True)
        run = run_child(name, quick=args.quick, timeout=timeout)
        print(f"   {run.status} in {run.seconds:.1f} s {run.error}", flush=True)
        runs.append(run)
    rows = [row for run in runs for row in run.rows if keep_row(row, run.module, args.only)]
    info = machine()
    title = (
        f"jobkit beside the native systems, {started:%Y-%m-%d %H:%M} UTC, "
        f"{info['cpus']} CPUs {info['cpu_model']}"
        + (" (quick: numbers meaningless)" if args.quick else "")
    )
    print_table(rows, runs, title)
    if args.markdown:
        args.markdown.write_text(markdown(rows, runs, title))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "seconds": (datetime.now(UTC) - started).total_seconds(),
                    "quick": args.quick,
                    "machine": info,
                    "modules": [{k: v for k, v in to_json(r).items() if k != "rows"} for r in runs],
                    "rows": [dataclasses.asdict(r) for r in rows],
                    "ratios": ratios(rows),
                },
                indent=2,
            )
        )
    return 1 if any(r.status == "error" for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
