"""Fixtures shared by the tests that run `tests.apps.ledger` on a backend.

A test module using `app` defines a `backend` fixture (the URL) for it.

The suite runs in parallel (pytest-xdist, ``--dist loadgroup``, see tests/run.sh): tests are
handed out one by one to worker processes, each with its own servers (session fixtures start
them on free ports, in directories of their own) and its own ``tmp_path``. The tests of a module
that uses a module- or class-scoped fixture all go to one worker, so that fixture runs once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App
from tests.apps import ledger

_SHARED_SCOPES = {"package", "module", "class"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each module that shares a fixture among its tests on one xdist worker."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or not isinstance(item, pytest.Function):
            continue
        if any(d.scope in _SHARED_SCOPES for defs in info.name2fixturedefs.values() for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


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
