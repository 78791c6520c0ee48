"""The test servers can be stopped and started again in place, keeping their data (outage tests
and the conformance suite's broker control rely on it)."""

from __future__ import annotations

import socket

import boto3
import pytest
import redis
from kombu import Connection, Exchange, Queue

from tests.servers.moto import FAKE_AWS_ENV, start_moto
from tests.servers.rabbitmq import start_rabbitmq
from tests.servers.redis import start_redis


def _refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"\r\n")
            return sock.recv(1) == b""  # accepted, then cut: the proxy's upstream is gone
    except OSError:
        return True


def test_redis_restart_keeps_its_data_on_the_same_port() -> None:
    server = start_redis()
    try:
        client = redis.Redis(port=server.port)
        client.rpush("queue", b"one", b"two")
        server.stop_broker()
        assert _refuses(server.port)
        server.start_broker()
        assert redis.Redis(port=server.port).lrange("queue", 0, -1) == [b"one", b"two"]
    finally:
        server.stop()


def test_rabbitmq_stop_app_keeps_durable_messages_on_the_same_port() -> None:
    server = start_rabbitmq()
    queue = Queue("outage", Exchange("outage"), routing_key="outage", durable=True)
    try:
        with Connection(server.url) as conn:
            conn.Producer().publish(
                {"n": 1}, exchange=queue.exchange, routing_key="outage", declare=[queue],
                delivery_mode=2,
            )  # fmt: skip
        server.stop_broker()
        assert _refuses(server.port)
        server.start_broker()
        with Connection(server.url) as conn:
            message = conn.SimpleQueue(queue).get(timeout=10)
            assert message.payload == {"n": 1}
            message.ack()
    finally:
        server.stop()


def test_moto_outage_refuses_connections_then_keeps_its_queues(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    server = start_moto()
    try:
        sqs = boto3.client("sqs", endpoint_url=server.endpoint)
        url = sqs.create_queue(QueueName="outage")["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody="kept")
        server.stop_broker()
        assert _refuses(int(server.endpoint.rsplit(":", 1)[1]))
        server.start_broker()
        received = boto3.client("sqs", endpoint_url=server.endpoint).receive_message(
            QueueUrl=url, WaitTimeSeconds=1
        )
        assert [m["Body"] for m in received["Messages"]] == ["kept"]
    finally:
        server.stop()


def test_proxy_listens_again_right_after_a_cut() -> None:
    """A cut then an immediate resume (as a conformance scenario's stop/start may do): the port
    is free again at once, every time."""
    from tests.servers import free_port
    from tests.servers.proxy import TcpProxy

    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen()
        proxy = TcpProxy(upstream.getsockname()[1], free_port())
        try:
            for _ in range(30):
                proxy.cut()
                proxy.resume()
                socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            proxy.cut()
            assert _refuses(proxy.port)
        finally:
            proxy.close()
