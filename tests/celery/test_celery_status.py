"""`jobkit status` on Celery lists job queues only, with a real worker (and its Celery
control queues) on a real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.servers.rabbitmq import RabbitServer
from tests.workers import jobkit_cli, running_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def served(any_url: str, ledger: Path) -> Iterator[str]:
    """A worker on `QUEUE` that has run a job (its control queues exist by then)."""
    L.app.use(any_url)
    with running_worker(any_url, ledger, "-q", QUEUE, "-c", "1"):
        assert L.record.enqueue("status").result(timeout=90) == "status"
        yield any_url
    L.app.close()


def test_status_lists_job_queues_and_not_celery_control_queues(served: str) -> None:
    out = jobkit_cli(served, "status", "--json")
    assert out.returncode == 0, out.stderr
    queues = {row["queue"] for row in json.loads(out.stdout)}
    assert QUEUE in queues
    internal = sorted(q for q in queues if "pidbox" in q or q.startswith(("celeryev", "_kombu")))
    assert internal == []


def test_status_without_a_store_counts_the_delayed_jobs_another_process_sent(
    rabbit_server: RabbitServer, ledger: Path
) -> None:
    # RabbitMQ cannot list queues: a fresh process finds the delay queues by their names
    from jobkit_celery._amqp_ops import delay_ttl_ms
    from jobkit_celery._names import delay_queue_name

    delays = [timedelta(seconds=5), timedelta(minutes=7), timedelta(hours=3), timedelta(days=40)]
    buckets = [delay_queue_name(QUEUE, delay_ttl_ms(d.total_seconds())) for d in delays]
    rabbit_server.delete_queues(QUEUE, *buckets)
    url = f"celery+{rabbit_server.url}"
    L.app.use(url)
    try:
        for delay in delays:
            L.record.options(delay=delay).enqueue("later")
        out = jobkit_cli(url, "status", "-q", QUEUE, "--json")
    finally:
        L.app.close()
        rabbit_server.delete_queues(QUEUE, *buckets)
    assert out.returncode == 0, out.stderr
    [row] = json.loads(out.stdout)
    assert (row["queue"], row["delayed"], row["ready"]) == (QUEUE, len(delays), 0), row
