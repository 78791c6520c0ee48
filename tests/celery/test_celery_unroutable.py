"""Celery+RabbitMQ when a queue is gone (deleted by an operator while producers and workers run):
it is declared again and the job or dead letter lands in it, never dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.servers.rabbitmq import RabbitServer
from tests.waiting import wait_until
from tests.workers import running_worker

pytestmark = pytest.mark.slow


def test_an_enqueue_after_its_queue_was_deleted_declares_it_again(
    amqp_url: str, rabbit_server: RabbitServer
) -> None:
    L.app.use(amqp_url)
    try:
        L.record.enqueue("before")
        assert L.app.backend.stats([QUEUE])[0].ready == 1
        rabbit_server.delete_queues(QUEUE)  # the producer still thinks it declared it
        handle = L.record.enqueue("after")
        stats = L.app.backend.stats([QUEUE])[0]
        assert stats.ready == 1, f"job {handle.id} was not put on {QUEUE!r}: {stats}"
    finally:
        L.app.close()


def test_a_dead_letter_after_its_queue_was_deleted_declares_it_again(
    amqp_url: str, rabbit_server: RabbitServer, ledger: Path
) -> None:
    L.app.use(amqp_url)
    try:
        with running_worker(amqp_url, ledger, "-q", QUEUE, "-c", "1"):
            L.permanent.enqueue("first")
            wait_until(lambda: L.app.backend.stats([QUEUE])[0].dead == 1, timeout=60)
            rabbit_server.delete_queues(f"jobkit.dlq.{QUEUE}")  # the worker declared it
            second = L.permanent.enqueue("second")
            wait_until(
                lambda: L.app.backend.stats([QUEUE])[0].dead == 1, timeout=60,
                what="the second job's dead letter",
            )  # fmt: skip
        assert [d.id for d in L.app.backend.dead_letters(QUEUE)] == [second.id]
    finally:
        L.app.close()


def test_listing_dead_letters_after_the_queue_was_deleted_declares_it_again(
    amqp_url: str, rabbit_server: RabbitServer
) -> None:
    L.app.use(amqp_url)
    try:
        assert L.app.backend.dead_letters(QUEUE) == []  # declared by this process
        rabbit_server.delete_queues(f"jobkit.dlq.{QUEUE}")
        assert L.app.backend.dead_letters(QUEUE) == []
        assert L.app.backend.replay(QUEUE) == 0
        assert L.app.backend.purge(QUEUE) == 0
    finally:
        L.app.close()
