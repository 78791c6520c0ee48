"""Worker semantics on SQS (moto server mode), with real worker processes (scenarios in
`tests.semantics`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import semantics
from tests.servers.moto import MotoServer

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(moto: MotoServer, prefix: str, tmp_path: Path) -> str:
    return moto.url(prefix=prefix, visibility="5", store=f"sqlite:///{tmp_path / 'jobs.db'}")


class TestSqsWorkerSemantics(semantics.TransportSemantics):
    pass
