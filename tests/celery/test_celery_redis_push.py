"""What one enqueue writes on Celery+Redis: the task message on its list, the doorbell rung only
when that list was empty, the ``argsrepr`` Flower shows."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
from celery.utils.saferepr import saferepr
from jobkit_celery._names import bell_name

from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.servers.redis import RedisServer


@pytest.fixture
def client(redis_url: str, redis_server: RedisServer) -> Iterator[redis.Redis]:
    L.app.use(redis_url)
    conn = redis.Redis.from_url(f"{redis_server.url}/0")
    yield conn
    conn.close()
    L.app.close()


def _lists(client: redis.Redis) -> list[bytes]:
    """The queue's lists (kombu keeps one per priority step)."""
    return [k for k in client.keys(f"{QUEUE}*") if client.type(k) == b"list"]


def test_push_onto_an_empty_queue_rings_the_doorbell_once(client: redis.Redis) -> None:
    for key in ("a", "b", "c"):
        L.record.enqueue(key)
    (queue_list,) = _lists(client)
    assert client.llen(queue_list) == 3
    assert client.xlen(bell_name(QUEUE)) == 1  # only the first push found the list empty


def test_push_after_the_queue_emptied_rings_again(client: redis.Redis) -> None:
    L.record.enqueue("a")
    client.delete(*_lists(client))  # as a worker taking the last message leaves it
    L.record.enqueue("b")
    assert client.xlen(bell_name(QUEUE)) == 2


def test_task_message_carries_the_args_repr_celery_would_write(client: redis.Redis) -> None:
    L.echo.enqueue("k", payload="p" * 2000)
    (queue_list,) = _lists(client)
    message = json.loads(client.lindex(queue_list, 0))  # type: ignore[arg-type]
    headers = message["headers"]
    assert headers["argsrepr"] == "['k']"
    assert headers["kwargsrepr"] == saferepr({"payload": "p" * 2000}, 1024)  # cut as Celery cuts
