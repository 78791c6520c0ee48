"""Worker semantics on SQLite, with real worker processes (scenarios in `tests.semantics`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobkit import App
from tests import semantics

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


class TestSqliteWorkerSemantics(semantics.TransportSemantics):
    def test_two_workers_holding_copies_of_a_succeeded_key_run_it_once(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        semantics.two_workers_holding_copies_of_a_key_run_it_once(app, backend, ledger_path)
