"""The main job: the example shop on the embedded SQLite backend, end to end.

It enqueues a mix of jobs (some fail for a while, some for good, some are delayed, one hangs),
runs a real `jobkit worker` (with Prometheus metrics on $JOBKIT_DEMO_METRICS_PORT, 9464 by
default, when prometheus-client is installed: `curl http://127.0.0.1:9464/metrics` while it
runs), waits for every job to end, prints what happened and the worker's job counters, shows
`jobkit status` and `jobkit dlq list`, and then runs the conformance suite against the same
backend (if `jobkit-conformance` is installed).

    python examples/quickstart.py            # normally via examples/demo.sh
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from examples import shop  # noqa: E402
from jobkit import JobHandle, JobState  # noqa: E402

console = Console(width=120)


def enqueue_all() -> list[JobHandle]:
    handles = [shop.send_receipt.enqueue(i, f"customer{i}@example.com") for i in range(1, 9)]
    handles += [shop.charge_card.enqueue(i, 1000 + i) for i in range(1, 11)]
    handles += [shop.reserve_stock.enqueue(sku) for sku in ("SKU-1", "GONE-7")]
    handles += [shop.notify_partner.enqueue(42)]
    handles += [shop.build_invoice_pdf.enqueue(7, 3), shop.build_invoice_pdf.enqueue(8, 500)]
    later = shop.ask_for_review.options(delay=timedelta(seconds=2))
    handles += [later.enqueue(i) for i in (1, 2, 3)]
    return handles


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "jobkit.cli.main", *args], cwd=ROOT, check=False)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="jobkit-quickstart-"))
    url = f"sqlite:///{workdir / 'shop.db'}"
    # Configuration, not code, picks the backend: the app and the worker both read this.
    os.environ["JOBKIT_BACKEND"] = url
    os.environ["JOBKIT_APP"] = "examples.shop:app"
    console.rule(f"[bold]jobkit quickstart on {url}")
    handles = enqueue_all()
    port = _metrics_port()
    metrics = ["--metrics-port", str(port)] if port else []
    console.print(
        f"enqueued {len(handles)} jobs; starting `jobkit worker -c 2 {' '.join(metrics)}`"
    )
    if port:
        console.print(f"metrics: curl -s http://127.0.0.1:{port}/metrics | grep ^jobkit_")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobkit.cli.main",
            "worker",
            "-q",
            "shop",
            "-c",
            "2",
            "--lease",
            "5",
            *metrics,
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    started = time.monotonic()
    try:
        deadline = started + 90
        while time.monotonic() < deadline:
            if all(h.state in (JobState.SUCCEEDED, JobState.DEAD) for h in handles):
                break
            time.sleep(0.1)
        else:
            console.print("[red]not every job ended within 90 s")
            return 1
        if port:
            show_metrics(port)
    finally:
        worker.send_signal(signal.SIGTERM)  # graceful: nothing is running now
        worker.wait(timeout=60)
    elapsed = time.monotonic() - started
    report(handles, elapsed)
    console.rule("jobkit status")
    cli("status")
    console.rule("jobkit dlq list shop")
    cli("dlq", "list", "shop")
    code = 0
    if shutil.which("jobkit-conformance") or _has_conformance():
        console.rule("conformance suite on the embedded default")
        code = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobkit_conformance.cli",
                "run",
                "--backend",
                f"sqlite:///{workdir / 'conformance.db'}",
            ],
            cwd=ROOT,
            check=False,
        ).returncode
    shutil.rmtree(workdir, ignore_errors=True)
    return code


def _metrics_port() -> int | None:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return None
    return int(os.environ.get("JOBKIT_DEMO_METRICS_PORT", "9464"))


def show_metrics(port: int) -> None:
    """What `curl http://127.0.0.1:PORT/metrics` shows now: the job counters and the queue
    gauges (the same numbers as `jobkit status`)."""
    from urllib.request import urlopen

    console.rule(f"curl -s http://127.0.0.1:{port}/metrics | grep -E '_total|_queue_'")
    wanted = ("jobkit_jobs_", "jobkit_queue_")
    # the worker writes each outcome just after the job's record: give the last one a moment
    for _ in range(20):
        with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            lines = answer.read().decode().splitlines()
        shown = [line for line in lines if line.startswith(wanted) and "_created" not in line]
        if shown:
            break
        time.sleep(0.1)
    for line in sorted(shown):
        console.print(line, markup=False, highlight=False)


def _has_conformance() -> bool:
    try:
        import jobkit_conformance  # noqa: F401
    except ImportError:
        return False
    return True


def report(handles: list[JobHandle], elapsed: float) -> None:
    table = Table(title=f"what happened ({elapsed:.1f} s)")
    for column in ("job", "id", "outcome", "attempts", "last error"):
        table.add_column(column)
    outcomes: Counter[str] = Counter()
    for h in handles:
        record = h.record()
        assert record is not None
        if record.state is JobState.SUCCEEDED:
            outcome = "done" if record.attempts == 1 else "retried, then done"
        else:
            outcome = "dead-lettered"
        outcomes[outcome] += 1
        last = record.errors[-1].error if record.errors else ""
        name = (h.job or "").rsplit(".", 1)[-1]
        table.add_row(name, h.id[:8], outcome, str(record.attempts), last[:60])
    console.print(table)
    console.print(
        ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) + f" of {len(handles)}"
    )


if __name__ == "__main__":
    sys.exit(main())
