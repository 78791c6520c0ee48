"""Worker semantics on RabbitMQ, with real worker processes (scenarios in `tests.semantics`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import semantics
from tests.rabbitmq.conftest import url_of
from tests.servers.rabbitmq import RabbitServer

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(rabbit_server: RabbitServer, prefix: str, tmp_path: Path) -> str:
    return url_of(rabbit_server, prefix, store=f"sqlite:///{tmp_path / 'jobs.db'}")


class TestRabbitWorkerSemantics(semantics.TransportSemantics):
    pass
