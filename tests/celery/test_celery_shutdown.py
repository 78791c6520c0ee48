"""Graceful shutdown on Celery (real brokers, real worker processes): jobs a worker had
prefetched but not started when it got SIGTERM use none of their attempts."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE, runs
from tests.servers.rabbitmq import RabbitServer
from tests.waiting import wait_until
from tests.workers import kill_group, running_worker, start_worker

pytestmark = pytest.mark.slow

JOBS = 5


@pytest.fixture
def storeless_amqp_url(rabbit_server: RabbitServer) -> Iterator[str]:
    """celery+amqp as the README writes it: no store=, attempts counted from RabbitMQ's
    redelivered flag."""
    from jobkit_celery.probe import probe_from_url

    rabbit_server.delete_queues(QUEUE)
    url = f"celery+{rabbit_server.url}"
    # declared again with its binding: kombu's producers in this process remember having
    # declared it, and would publish to its exchange with no queue bound
    probe = probe_from_url(url)
    probe.cleanup([QUEUE])
    probe.close()
    L.app.use(url)
    yield url
    L.app.close()


def test_jobs_prefetched_at_sigterm_run_once_on_the_next_worker(storeless_amqp_url, ledger):
    keys = [f"buffered-{n}" for n in range(JOBS)]
    handles = [L.once.enqueue(key, sleep=1.0) for key in keys]  # max_attempts=1
    first = start_worker(
        storeless_amqp_url, ledger, "-q", QUEUE, "-c", "1", "--prefetch", "4", "--grace", "20"
    )
    try:
        wait_until(lambda: runs(ledger, keys[0]), timeout=60, what="the first job started")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=40) == 0
    finally:
        kill_group(first)
    started = sum(len(runs(ledger, key)) for key in keys)
    assert started == 1  # the stopping worker started nothing after the SIGTERM
    with running_worker(storeless_amqp_url, ledger, "-q", QUEUE, "-c", "2"):
        wait_until(
            lambda: sum(len(runs(ledger, key)) for key in keys)
            + len(L.app.backend.dead_letters(QUEUE)) >= JOBS,
            timeout=60, what="every job ran or was dead-lettered",
        )  # fmt: skip
    dead = [(d.id, d.reason) for d in L.app.backend.dead_letters(QUEUE)]
    assert dead == [], ([h.id for h in handles], dead)
    assert [len(runs(ledger, key)) for key in keys] == [1] * JOBS
