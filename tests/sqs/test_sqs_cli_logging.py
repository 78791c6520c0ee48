"""The `jobkit` command on SQS logs jobkit's INFO lines, but botocore's only with -v."""

from __future__ import annotations

from tests.servers.moto import MotoServer
from tests.workers import jobkit_command as jobkit


def test_worker_logs_its_own_info_lines_and_no_botocore_ones(moto: MotoServer, prefix: str) -> None:
    url = moto.url(prefix=prefix)
    out = jobkit("--backend", url, "--app", "tests.apps.ledger:app", "worker", "--burst", "-c", "1")
    assert out.returncode == 0, out.stderr
    assert "INFO jobkit.cli.worker" in out.stderr  # jobkit's own INFO stays
    assert "botocore" not in out.stderr and "urllib3" not in out.stderr


def test_verbose_shows_other_libraries_lines(moto: MotoServer, prefix: str) -> None:
    out = jobkit("status", "-v", "--backend", moto.url(prefix=prefix))
    assert out.returncode == 0, out.stderr
    assert "botocore" in out.stderr
