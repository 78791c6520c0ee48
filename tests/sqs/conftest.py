"""Fixtures for the SQS adapter tests: one moto server (real HTTP) per test session.

The server is started by the tests on a loopback port of its own and stopped by PID. A server
that cannot start makes the tests that need it fail (error), never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from jobkit_sqs import SqsTransport, parse_url

from tests.servers.moto import FAKE_AWS_ENV, MotoServer, start_moto


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS_ENV.items():
            patch.setenv(name, value)  # fake credentials, only ever sent to our moto
        try:
            server = start_moto()
        except RuntimeError as exc:
            pytest.fail(f"cannot start moto's SQS server: {exc}")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def prefix() -> str:
    """A queue-name prefix of this test's own: every test works on fresh, shallow queues."""
    return f"jk{uuid.uuid4().hex[:8]}-"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "full: long soaks, run only with JOBKIT_TEST_PROFILE=full (else deselected)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `full` are deselected (not skipped) unless JOBKIT_TEST_PROFILE=full."""
    if os.environ.get("JOBKIT_TEST_PROFILE") == "full":
        return
    kept = [item for item in items if item.get_closest_marker("full") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture
def transport(url: str) -> Iterator[SqsTransport]:
    """An SQS transport on the module's `url` fixture."""
    transport = SqsTransport(parse_url(url))
    yield transport
    transport.close()


@pytest.fixture
def sqs(moto: MotoServer) -> Any:
    """A plain boto3 SQS client on the test moto server."""
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=moto.endpoint)


def queue_url(sqs: Any, name: str) -> str:
    found: str = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return found
