"""What jobkit on Dramatiq refuses at enqueue, with a clear error, before anything is sent."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from jobkit_dramatiq import _wire
from jobkit_dramatiq.probe import probe_from_url

import jobkit
from tests.apps import ledger as L
from tests.dramatiq.conftest import QUEUE

pytestmark = pytest.mark.slow


@pytest.fixture
def app_closed() -> Iterator[None]:
    yield
    L.app.close()


def test_idempotency_key_without_a_shared_store_is_refused_naming_the_option(
    redis_url: str, app_closed: None
) -> None:
    L.app.use(redis_url)
    with pytest.raises(jobkit.UnsupportedFeature, match="store=sqlite"):
        L.record.options(idempotency_key="once").enqueue("keyed")
    probe = probe_from_url(redis_url)
    try:
        assert probe.depth(QUEUE) == 0  # nothing was sent
    finally:
        probe.close()


def test_priority_on_redis_is_refused_naming_what_is_supported(
    redis_url: str, app_closed: None
) -> None:
    L.app.use(redis_url)
    with pytest.raises(jobkit.UnsupportedFeature, match="no priorities"):
        L.record.options(priority=5).enqueue("urgent")


@pytest.mark.parametrize("delay_s", [0.0004, 0.0015, 1.0, 5.0004, 8.0, 86_400.0009])
def test_an_eta_on_the_wire_is_never_before_the_delay_has_passed(delay_s: float) -> None:
    """Dramatiq's ``eta`` is compared with the current epoch ms rounded down: an eta rounded
    down too would let a job start up to 1 ms before its delay ends."""
    for _ in range(200):
        before = time.time()
        eta = _wire.eta_after(timedelta(seconds=delay_s))
        assert eta / 1000 >= before + delay_s
