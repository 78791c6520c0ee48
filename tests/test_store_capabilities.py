"""Capabilities follow the configuration: a backend whose workers share no job store claims
neither idempotency keys nor results, and enqueue refuses a key with `UnsupportedFeature`
naming the URL option that gives it one; nothing is sent.

The refusal lives in the core (`Capabilities.check`, called by every enqueue), so any backend
gets it by declaring its capabilities honestly; here a memory transport declares a store-less
configuration.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from jobkit import App, UnsupportedFeature
from jobkit.job import EnqueueOptions
from jobkit.memory import MemoryTransport
from jobkit.registry import open_backend
from jobkit.spi import (
    Capabilities,
    EventKind,
    JobEvent,
    MemoryJobStore,
    TransportBackend,
    dedup_key,
)


class _StorelessBackend(TransportBackend):
    @property
    def capabilities(self) -> Capabilities:
        return replace(
            self.transport.capabilities,
            name="storeless",
            idempotency_keys=False,
            results=False,
            store_option="store=kind://WHERE",
        )


@pytest.fixture
def app() -> Iterator[App]:
    app = App("t", backend=_StorelessBackend(MemoryTransport(), MemoryJobStore()))
    yield app
    app.close()


def _ready(app: App) -> int:
    return app.backend.stats(["default"])[0].ready


def test_key_without_a_shared_store_is_refused_naming_the_store_option(app: App) -> None:
    @app.job
    def charge(order: str) -> None: ...

    with pytest.raises(UnsupportedFeature, match=r"idempotency key 'o-1'.*store=kind://WHERE"):
        charge.options(idempotency_key="o-1").enqueue("o-1")
    assert _ready(app) == 0


def test_key_computed_by_the_job_is_refused_too(app: App) -> None:
    @app.job(idempotency_key=lambda order: f"charge-{order}")
    def charge(order: str) -> None: ...

    with pytest.raises(UnsupportedFeature, match="store=kind://WHERE"):
        charge.enqueue("o-2")
    assert _ready(app) == 0


def test_one_refused_call_in_a_batch_sends_none_of_it(app: App) -> None:
    @app.job
    def charge(order: str) -> None: ...

    with pytest.raises(UnsupportedFeature):
        app.enqueue_many(
            [
                (charge, ("o-3",), {}, EnqueueOptions()),
                (charge, ("o-4",), {}, EnqueueOptions(idempotency_key="o-4")),
            ]
        )
    assert _ready(app) == 0


def test_jobs_without_keys_are_still_accepted(app: App) -> None:
    @app.job
    def charge(order: str) -> None: ...

    charge.enqueue("o-5")
    assert _ready(app) == 1


def test_job_record_without_a_shared_store_raises_naming_the_store_option(app: App) -> None:
    @app.job
    def charge(order: str) -> None: ...

    handle = charge.enqueue("o-6")
    with pytest.raises(UnsupportedFeature, match=r"record of job .*store=kind://WHERE"):
        app.backend.job_record(handle.id)


def test_without_a_store_option_the_refusal_says_to_drop_the_key() -> None:
    caps = Capabilities(name="x", idempotency_keys=False)
    assert caps.without_store("idempotency keys", "Drop the key") == "Drop the key"


def test_a_store_without_records_keeps_the_done_keys_and_no_record() -> None:
    store = MemoryJobStore(records=False)
    at = datetime.now(UTC)
    store.record(
        [
            JobEvent(job_id="j1", job="t.charge", kind=EventKind.STARTED, attempt=1, at=at),
            JobEvent(job_id="j1", job="t.charge", kind=EventKind.SUCCEEDED, attempt=1, at=at),
            JobEvent(job_id="j2", job="t.charge", kind=EventKind.DEAD, attempt=3, at=at),
        ]
    )
    assert store.done([dedup_key("j1", None), dedup_key("j2", None)]) == {dedup_key("j1", None)}
    assert store.get("j1") is None and store.get("j2") is None


@pytest.mark.parametrize(
    "url",
    [
        "amqp://guest:guest@127.0.0.1:1/%2F",
        "sqs://us-east-1?endpoint_url=http://127.0.0.1:1",
        "dramatiq+redis://127.0.0.1:1/0",
    ],
)
def test_a_backend_whose_store_is_private_to_its_process_keeps_no_records(url: str) -> None:
    backend = open_backend(url)
    try:
        assert not backend.capabilities.results
        assert isinstance(backend, TransportBackend)
        assert isinstance(backend.store, MemoryJobStore) and not backend.store.keeps_records
    finally:
        backend.close()
