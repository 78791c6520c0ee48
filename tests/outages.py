"""Checks shared by the broker-outage tests (one per backend)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def assert_rode_out_outage(worker: subprocess.Popen[bytes], log: Path) -> None:
    """The worker is the same process and still running (or exited 0, in burst mode), and it
    logged the outage once per streak of failures, not once per failed try."""
    code = worker.poll()
    assert code in (None, 0), f"worker exited {code}: {log.read_text()[-3000:]}"
    text = log.read_text()
    retrying = [line for line in text.splitlines() if "retrying (every" in line]
    assert retrying, f"the worker never noticed the outage: {text[-3000:]}"
    assert len(retrying) < 20, f"logged every failed try: {len(retrying)} lines"
