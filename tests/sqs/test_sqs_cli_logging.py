"""The `jobkit` command on SQS logs jobkit's INFO lines, but botocore's only with -v."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.servers.moto import MotoServer
from tests.workers import ROOT


def jobkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobkit.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_worker_logs_its_own_info_lines_and_no_botocore_ones(moto: MotoServer, prefix: str) -> None:
    url = moto.url(prefix=prefix)
    out = jobkit("--backend", url, "--app", "tests.apps.ledger:app", "worker", "--burst", "-c", "1")
    assert out.returncode == 0, out.stderr
    assert "INFO jobkit.worker" in out.stderr  # jobkit's own INFO stays
    assert "botocore" not in out.stderr and "urllib3" not in out.stderr


def test_verbose_shows_other_libraries_lines(moto: MotoServer, prefix: str) -> None:
    out = jobkit("status", "-v", "--backend", moto.url(prefix=prefix))
    assert out.returncode == 0, out.stderr
    assert "botocore" in out.stderr
