"""Fixtures shared by the tests that run `tests.apps.ledger` on a backend, and the session's
rabbitmq-server (Celery's and jobkit-rabbitmq's tests use the same one).

A test module using `app` defines a `backend` fixture (the URL) for it.

The suite runs in parallel (pytest-xdist, ``--dist loadfile``, see tests/run.sh): each test
module runs whole on one worker process (so a module-scoped fixture runs once), and each worker
has its own servers (session fixtures start them on free ports, in directories of their own)
and its own ``tmp_path``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App
from tests.apps import ledger
from tests.servers.rabbitmq import RabbitServer, start_rabbitmq


@pytest.fixture(scope="session")
def rabbit_server() -> Iterator[RabbitServer]:
    """A real rabbitmq-server for the session; failing to start fails the test, never skips."""
    try:
        server = start_rabbitmq()
    except RuntimeError as exc:
        pytest.fail(f"cannot start rabbitmq-server: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ledger_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ledger file; worker processes started by the test find it through the env."""
    path = tmp_path / "ledger.db"
    ledger.connect(str(path)).close()
    monkeypatch.setenv("JOBKIT_TEST_LEDGER", str(path))
    return path


@pytest.fixture
def app(backend: str) -> Iterator[App]:
    """The ledger app on the module's `backend`."""
    ledger.app.use(backend)
    yield ledger.app
    ledger.app.close()
