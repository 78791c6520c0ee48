"""Worker semantics on Celery (real redis-server / rabbitmq-server, real worker processes):
graceful shutdown with prefetch, broken messages recorded DEAD, unknown jobs waiting for a
worker that knows them. Scenarios shared with the other backends are in `tests.semantics`."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobkit import App, JobState
from jobkit.spi import Envelope
from tests import semantics
from tests.apps import ledger
from tests.celery.conftest import _flush
from tests.servers.redis import RedisServer
from tests.waiting import wait_until
from tests.workers import running_worker

pytestmark = pytest.mark.slow


@pytest.fixture(params=["redis", "amqp"])
def backend(request: pytest.FixtureRequest, redis_server: RedisServer) -> str:
    """Prefetch 4 per process; on Redis a visibility timeout well above the jobs' run time."""
    if request.param == "redis":
        _flush(redis_server)
        return f"celery+{redis_server.url}/0?visibility_timeout=30&prefetch=4"
    url: str = request.getfixturevalue("amqp_url")  # queues purged
    return f"{url}&prefetch=4"


class TestCeleryWorkerSemantics(semantics.CommonSemantics):
    def test_malformed_jobkit_header_is_dead_lettered_and_its_handle_reports_dead(
        self, app: App, backend: str, ledger_path: Path
    ) -> None:
        bad = Envelope(job=ledger.record.name, args=("typed",), queue="work", idempotency_key=5)  # type: ignore[arg-type]
        app.backend.runtime.send([bad])  # type: ignore[attr-defined]
        handle = app.handle(bad.id)
        good = ledger.record.enqueue("after-typed")
        with running_worker(backend, ledger_path, "-q", "work", "-c", "1") as proc:
            wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
            wait_until(lambda: good.state is JobState.SUCCEEDED, timeout=60, what="the next job")
            dead = semantics.dead_letters(app, 1)  # recorded DEAD first, then moved
            assert proc.poll() is None
        assert [d.id for d in dead] == [bad.id]
        assert "idempotency" in dead[0].reason or "wrong type" in dead[0].reason

    def test_newer_jobkit_header_waits_then_is_dead_lettered_under_its_job_id(
        self, app: App, backend: str, ledger_path: Path, tmp_path: Path
    ) -> None:
        from jobkit_celery._wire import meta_of

        def send() -> str:
            env = Envelope(job=ledger.record.name, args=("v2",), queue="work")
            runtime = app.backend.runtime  # type: ignore[attr-defined]
            runtime.send_raw(env, {**meta_of(env), "v": 2, "something_new": [1]})
            return env.id

        semantics.newer_envelope_waits_then_is_dead(app, backend, ledger_path, tmp_path, send)


def test_undecodable_message_is_recorded_dead_under_its_broker_message_id(
    amqp_url: str, ledger_path: Path
) -> None:
    from jobkit_celery.probe import probe_from_url

    ledger.app.use(amqp_url)
    probe = probe_from_url(amqp_url, ledger.app.backend)
    try:
        probe.inject_raw("work", b"\xff\xfe not a message {", id="poison-9")
        handle = ledger.app.handle("poison-9")
        with running_worker(amqp_url, ledger_path, "-q", "work", "-c", "1"):
            wait_until(lambda: handle.state is JobState.DEAD, timeout=60, what="the DEAD record")
            dead = semantics.dead_letters(ledger.app, 1)
        assert "undecodable" in dead[0].reason
    finally:
        probe.close()
        ledger.app.close()
