"""Task messages jobkit cannot run, sent by a foreign producer (another service, an older or
newer one) onto a real redis-server / rabbitmq-server: each reaches jobkit's dead-letter queue
with a reason that `jobkit dlq list` shows, and the worker keeps serving."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit.spi import Envelope
from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.waiting import wait_until
from tests.workers import jobkit_cli, kill_group, start_worker

pytestmark = pytest.mark.slow

_BODY = [[], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]

# name -> (Celery headers to change, jobkit header fields to change, body, content type,
#          what the dead letter's reason says)
POISON: dict[str, tuple[dict[str, Any], dict[str, Any], bytes | None, str, str]] = {
    "attempt-text": ({}, {"attempt": "1"}, None, "application/json", "jobkit header"),
    "queue-number": ({}, {"queue": 5}, None, "application/json", "jobkit header"),
    "enqueued-number": ({}, {"enqueued_at": 5}, None, "application/json", "jobkit header"),
    "headers-list": ({}, {"headers": [1]}, None, "application/json", "jobkit header"),
    "header-not-object": ({"jobkit": "x"}, {}, None, "application/json", "jobkit header"),
    "timelimit-text": ({"timelimit": "x"}, {}, None, "application/json", "'timelimit'"),
    "retries-text": ({"retries": "x"}, {}, None, "application/json", "'retries'"),
    "eta-garbage": ({"eta": "garbage"}, {}, None, "application/json", "ETA"),
    "body-object": ({}, {}, b'{"a": 1}', "application/json", "not a Celery task body"),
    "body-truncated": ({}, {}, b'[[], {"a"', "application/json", "undecodable"),
    "pickle": ({}, {}, None, "application/x-python-serialize", "not accepted"),
}


@pytest.fixture
def worker(any_url: str, ledger: Path) -> Iterator[subprocess.Popen[bytes]]:
    L.app.use(any_url)
    proc = start_worker(any_url, ledger, "-q", QUEUE, "-c", "1", "--lease", "2")
    yield proc
    kill_group(proc)
    proc.wait(timeout=30)
    L.app.close()


def _publish_foreign(runtime: Any) -> dict[str, str]:
    """Publish every `POISON` message with kombu (as another service would); their job ids."""
    from jobkit_celery._wire import meta_of

    ids: dict[str, str] = {}
    queue = runtime.queue(QUEUE)
    with runtime.celery.connection_for_write() as conn:
        producer = conn.Producer()
        for name, (celery_headers, fields, body, content_type, _) in POISON.items():
            env = Envelope(job=L.record.name, args=(name,), queue=QUEUE)
            ids[name] = env.id
            headers = {
                "lang": "py", "task": env.job, "id": env.id, "root_id": env.id,
                "retries": 0, "timelimit": [None, None],
                "jobkit": {**meta_of(env), **fields},
                **celery_headers,
            }  # fmt: skip
            producer.publish(
                body if body is not None else json.dumps([[name], *_BODY[1:]]).encode(),
                exchange=queue.exchange, routing_key=QUEUE, declare=[queue], headers=headers,
                content_type=content_type, content_encoding="utf-8", correlation_id=env.id,
            )  # fmt: skip
    return ids


def test_every_message_jobkit_cannot_run_is_dead_lettered_with_its_reason(
    any_url: str, worker: subprocess.Popen[bytes]
) -> None:
    ids = _publish_foreign(L.app.backend.runtime)  # type: ignore[attr-defined]
    after = L.record.enqueue("after-poison")
    assert after.result(timeout=90) == "after-poison"

    def listed() -> dict[str, str] | None:
        out = jobkit_cli(any_url, "dlq", "list", QUEUE, "--json")
        assert out.returncode == 0, out.stderr
        rows = {row["id"]: row["reason"] for row in json.loads(out.stdout)}
        return rows if len(rows) >= len(POISON) else None

    reasons = wait_until(
        listed, timeout=60, interval=0.5, what="every poison message in `jobkit dlq list`"
    )
    for name, (*_, says) in POISON.items():
        assert says in reasons[ids[name]], (name, reasons[ids[name]])
    assert worker.poll() is None
