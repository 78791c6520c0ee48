"""Worker semantics on SQS (moto server mode), with real worker processes (scenarios in
`tests.semantics`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobkit import App
from tests import semantics
from tests.servers.moto import MotoServer

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(moto: MotoServer, prefix: str, tmp_path: Path) -> str:
    return moto.url(prefix=prefix, visibility="5", store=f"sqlite:///{tmp_path / 'jobs.db'}")


def test_sigterm_with_prefetch_starts_nothing_new_and_uses_no_attempt(
    app: App, backend: str, ledger_path: Path
) -> None:
    semantics.sigterm_with_prefetch_runs_every_single_attempt_job_once(app, backend, ledger_path)


def test_wrong_typed_envelope_field_is_dead_lettered_with_a_dead_record(
    app: App, backend: str, ledger_path: Path
) -> None:
    semantics.wrong_typed_field_is_dead_lettered_and_its_handle_reports_dead(
        app, backend, ledger_path
    )


def test_unknown_job_is_released_uncounted_until_a_worker_that_knows_it_runs_it(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    semantics.unknown_job_waits_for_a_worker_that_knows_it(app, backend, ledger_path, tmp_path)


def test_newer_envelope_version_waits_then_is_dead_lettered_under_its_job_id(
    app: App, backend: str, ledger_path: Path, tmp_path: Path
) -> None:
    semantics.newer_envelope_version_is_released_then_dead_lettered_under_its_id(
        app, backend, ledger_path, tmp_path
    )


def test_check_lists_job_names_waiting_that_the_app_does_not_define(app: App, backend: str) -> None:
    semantics.check_lists_job_names_waiting_that_the_app_does_not_define(app, backend)
