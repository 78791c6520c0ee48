"""What is specific to SQS: URL, queue layout, long delays, FIFO, sizes, redrive, the probe."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from jobkit_sqs import SqsTransport, backend_from_url, parse_url
from jobkit_sqs.probe import probe_from_url

from jobkit import App, BrokerUnavailable, ConfigurationError, UnsupportedFeature
from jobkit.spi import Message, TransportBackend, open_backend
from tests.servers import free_port
from tests.servers.moto import MotoServer
from tests.sqs.conftest import queue_url
from tests.waiting import wait_until

LONG = timedelta(seconds=60)


@pytest.fixture
def url(moto: MotoServer, prefix: str) -> str:
    return moto.url(prefix=prefix, visibility="5")


def receive_n(transport: SqsTransport, queue: str, n: int, lease: timedelta = LONG) -> list[Any]:
    got: list[Any] = []

    def more() -> bool:
        got.extend(
            transport.receive(
                [queue], max_messages=n - len(got), wait=timedelta(seconds=1), lease=lease
            )
        )
        return len(got) >= n

    wait_until(more, timeout=20, interval=0, what=f"{n} deliveries")
    return got


# -- URL ---------------------------------------------------------------------------------------


def test_url_options_are_parsed() -> None:
    config = parse_url(
        "sqs://eu-west-1?endpoint_url=http://127.0.0.1:1&prefix=app-&visibility=12&fifo=true"
        "&max_receives=7&store=sqlite:///x.db"
    )
    assert (config.region, config.endpoint_url, config.prefix) == (
        "eu-west-1",
        "http://127.0.0.1:1",
        "app-",
    )
    assert (config.visibility, config.fifo, config.max_receives, config.store) == (
        timedelta(seconds=12),
        True,
        7,
        "sqlite:///x.db",
    )
    assert config.queue_name("q") == "app-q.fifo"
    assert config.dlq_name("q") == "app-q-dlq.fifo"


def test_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_url("sqs://AKIAEXAMPLE:hunter2@us-east-1")
    assert "hunter2" not in str(info.value)
    assert "AWS chain" in str(info.value)


def test_unknown_url_option_is_named() -> None:
    with pytest.raises(ConfigurationError, match="visibilty"):
        parse_url("sqs://?visibilty=3")


def test_queue_name_sqs_would_refuse_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError, match="SQS refuses"):
        parse_url(url).queue_name("has space")


def test_backend_opens_through_the_entry_point(url: str) -> None:
    backend = open_backend(url)
    try:
        assert isinstance(backend, TransportBackend)
        assert isinstance(backend.transport, SqsTransport)
        assert backend.capabilities.name == "sqs"
        assert backend.capabilities.results is False  # store=memory: per-process records
    finally:
        backend.close()


def test_sqlite_store_makes_results_shared(url: str, tmp_path: Any) -> None:
    backend = backend_from_url(f"{url}&store=sqlite:///{tmp_path / 'jobs.db'}")
    try:
        assert backend.capabilities.results is True
    finally:
        backend.close()


# -- queues ------------------------------------------------------------------------------------


def test_queue_is_created_idempotently_with_a_redrive_policy(
    url: str, prefix: str, sqs: Any
) -> None:
    for _ in range(2):
        fresh = SqsTransport(parse_url(url))
        fresh.send([Message(queue="q", body=b"x", id="1")])
        fresh.close()
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url(sqs, f"{prefix}q"), AttributeNames=["All"])
    policy = json.loads(attrs["Attributes"]["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(f"{prefix}q-dlq")
    assert int(policy["maxReceiveCount"]) == 10
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "2"


def test_send_batches_more_than_ten_messages(transport: SqsTransport) -> None:
    transport.send([Message(queue="q", body=f"m{i}".encode(), id=str(i)) for i in range(25)])
    got = receive_n(transport, "q", 25)
    assert sorted(d.id for d in got) == sorted(str(i) for i in range(25))


def test_an_envelope_s_message_carries_its_id_in_the_body_only(
    transport: SqsTransport, prefix: str, sqs: Any
) -> None:
    # each message attribute costs SQS work on every send and receive; the envelope has the id
    from jobkit.spi import Envelope

    env = Envelope(job="j", args=(1,), queue="q")
    transport.send([Message(queue="q", body=env.encode(), id=env.id)])
    raw = sqs.receive_message(QueueUrl=queue_url(sqs, f"{prefix}q"), MessageAttributeNames=["All"])
    (message,) = raw["Messages"]
    assert "MessageAttributes" not in message
    sqs.change_message_visibility(
        QueueUrl=queue_url(sqs, f"{prefix}q"),
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    (delivery,) = receive_n(transport, "q", 1)
    assert (delivery.id, delivery.body) == (env.id, env.encode())


def test_a_body_that_does_not_start_with_its_id_keeps_the_id_in_an_attribute(
    transport: SqsTransport,
) -> None:
    bodies = {"raw": b"x", "other": b'{"v":1,"id":"other"}', "bin": b"\xff\x00"}
    transport.send([Message(queue="q", body=body, id=id) for id, body in bodies.items()])
    got = receive_n(transport, "q", 3)
    assert {d.id: d.body for d in got} == bodies


def test_unreachable_sqs_raises_broker_unavailable() -> None:
    url = f"sqs://?region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}&max_retries=0"
    transport = SqsTransport(parse_url(url))
    with pytest.raises(BrokerUnavailable, match="unreachable"):
        transport.send([Message(queue="q", body=b"x", id="1")])


# -- delays ------------------------------------------------------------------------------------


def test_delay_beyond_15_minutes_is_accepted_and_held(url: str) -> None:
    app = App("delays", backend=url)
    job = app.job(name="later")(lambda: None)
    try:
        assert app.backend.capabilities.max_delay is None
        job.options(delay=timedelta(minutes=20)).enqueue()
        (stats,) = app.backend.stats(["default"])
        assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 1)
    finally:
        app.close()


def test_message_surfacing_before_its_due_time_is_redelayed_without_counting_a_delivery(
    transport: SqsTransport, prefix: str, sqs: Any
) -> None:
    transport.send([Message(queue="q", body=b"warm-up", id="w")])
    receive_n(transport, "q", 1)
    sqs.send_message(  # what a 15-min hop of a longer delay looks like when it surfaces
        QueueUrl=queue_url(sqs, f"{prefix}q"),
        MessageBody="later",
        MessageAttributes={
            "jobkit-id": {"DataType": "String", "StringValue": "late"},
            "jobkit-due": {"DataType": "Number", "StringValue": str(time.time() + 3)},
            "jobkit-prior": {"DataType": "Number", "StringValue": "2"},
        },
    )
    assert transport.receive(["q"], max_messages=10, wait=timedelta(0), lease=LONG) == []
    (stats,) = transport.stats(["q"])
    assert (stats.ready, stats.delayed) == (0, 1)  # re-sent with the remaining delay
    (delivery,) = receive_n(transport, "q", 1)
    assert (delivery.id, delivery.body) == ("late", b"later")
    assert delivery.deliveries == 3  # 2 prior + this one; the early surfacing did not count


def test_release_beyond_15_minutes_re_sends_with_the_delivery_count(
    transport: SqsTransport, prefix: str, sqs: Any
) -> None:
    transport.send([Message(queue="q", body=b"x", id="r")])
    (delivery,) = receive_n(transport, "q", 1)
    transport.release(delivery, delay=timedelta(minutes=20))
    (stats,) = transport.stats(["q"])
    assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 1)


# -- limits ------------------------------------------------------------------------------------


def test_oversized_message_raises_at_enqueue(url: str) -> None:
    app = App("sizes", backend=url)
    job = app.job(name="big")(lambda data: None)
    try:
        limit = app.backend.capabilities.max_message_bytes
        assert limit is not None and limit < 262_144
        with pytest.raises(UnsupportedFeature, match="bytes"):
            job.enqueue("x" * 262_144)
        assert app.backend.stats(["default"])[0].ready == 0
    finally:
        app.close()


def test_priority_raises_at_enqueue(url: str) -> None:
    app = App("prio", backend=url)
    job = app.job(name="urgent")(lambda: None)
    try:
        with pytest.raises(UnsupportedFeature, match="no priorities"):
            job.options(priority=5).enqueue()
    finally:
        app.close()


# -- redrive -----------------------------------------------------------------------------------


def test_redrive_policy_catches_a_crash_loop_and_the_dlq_says_so(
    moto: MotoServer, prefix: str
) -> None:
    transport = SqsTransport(parse_url(moto.url(prefix=prefix, max_receives="2")))
    try:
        transport.send([Message(queue="q", body=b"crashy", id="c")])
        for expected in (1, 2):  # received, never settled (the worker died each time)
            (delivery,) = receive_n(transport, "q", 1, lease=timedelta(seconds=1))
            assert delivery.deliveries == expected
        wait_until(
            lambda: (
                transport.stats(["q"])[0].dead == 1
                or bool(
                    transport.receive(["q"], max_messages=1, wait=timedelta(seconds=1), lease=LONG)
                )
            ),
            timeout=20,
            what="the redrive",
        )
        (dead,) = transport.dead_letters("q")
        assert dead.id == "c"
        assert "redrive policy" in dead.reason
    finally:
        transport.close()


# -- replay ------------------------------------------------------------------------------------


def test_replay_of_many_dead_letters_neither_loses_nor_duplicates(transport: SqsTransport) -> None:
    transport.send([Message(queue="q", body=f"m{i}".encode(), id=str(i)) for i in range(23)])
    for delivery in receive_n(transport, "q", 23):
        transport.dead_letter(delivery, reason="r")
    assert len(transport.dead_letters("q")) == 23
    assert transport.replay("q") == 23
    (stats,) = transport.stats(["q"])
    assert (stats.ready, stats.dead) == (23, 0)
    assert sorted(d.id for d in receive_n(transport, "q", 23)) == sorted(map(str, range(23)))
    assert transport.receive(["q"], max_messages=10, wait=timedelta(0), lease=LONG) == []


# -- FIFO --------------------------------------------------------------------------------------


@pytest.fixture
def fifo(moto: MotoServer, prefix: str) -> Iterator[SqsTransport]:
    transport = SqsTransport(parse_url(moto.url(prefix=prefix, fifo="true")))
    yield transport
    transport.close()


def test_fifo_capabilities_report_the_five_minute_window(fifo: SqsTransport) -> None:
    caps = fifo.capabilities
    assert (caps.name, caps.dedup_window, caps.max_delay) == (
        "sqs-fifo",
        timedelta(minutes=5),
        timedelta(0),
    )


def test_fifo_drops_a_duplicate_idempotency_key_within_the_window(fifo: SqsTransport) -> None:
    fifo.send([Message(queue="q", body=b"first", id="a", dedup_key="order-7")])
    fifo.send([Message(queue="q", body=b"again", id="b", dedup_key="order-7")])
    fifo.send([Message(queue="q", body=b"other", id="c", dedup_key="order-8")])
    got = receive_n(fifo, "q", 2)
    assert sorted(d.body for d in got) == [b"first", b"other"]
    assert fifo.receive(["q"], max_messages=10, wait=timedelta(0), lease=LONG) == []


def test_fifo_dead_letter_and_replay(fifo: SqsTransport) -> None:
    fifo.send([Message(queue="q", body=b"x", id="a")])
    (delivery,) = receive_n(fifo, "q", 1)
    fifo.dead_letter(delivery, reason="boom")
    assert [d.reason for d in fifo.dead_letters("q")] == ["boom"]
    assert fifo.replay("q") == 1
    (again,) = receive_n(fifo, "q", 1)
    assert (again.id, again.deliveries) == ("a", 1)


def test_fifo_refuses_a_delay_at_enqueue(moto: MotoServer, prefix: str) -> None:
    app = App("fifo", backend=moto.url(prefix=prefix, fifo="true"))
    job = app.job(name="later")(lambda: None)
    try:
        with pytest.raises(UnsupportedFeature, match="delay"):
            job.options(delay=timedelta(seconds=5)).enqueue()
    finally:
        app.close()


# -- probe -------------------------------------------------------------------------------------


def test_probe_reads_depth_and_dead_letters_directly(url: str, transport: SqsTransport) -> None:
    probe = probe_from_url(url)
    try:
        assert probe.is_empty(["q"])
        transport.send([Message(queue="q", body=b"b", id="b")])
        probe.inject_raw("q", b"\x80 not text", id="raw")
        assert probe.depth("q") == 2
        raw, sent = sorted(receive_n(transport, "q", 2), key=lambda d: d.id != "raw")
        assert (raw.id, raw.body, sent.body) == ("raw", b"\x80 not text", b"b")
        transport.dead_letter(raw, reason="undecodable")
        transport.ack([sent])
        assert probe.depth("q") == 0
        (dead,) = probe.dead("q")
        assert (dead.id, dead.body, dead.reason) == ("raw", b"\x80 not text", "undecodable")
        assert probe.dead("q") == [dead]  # reading does not change the DLQ
        assert not probe.is_empty(["q"])
        probe.cleanup(["q"])
        assert probe.is_empty(["q"])
    finally:
        probe.close()


def test_probe_unreachable_url_is_an_sqs_url_nobody_answers(url: str) -> None:
    probe = probe_from_url(url)
    try:
        other = probe.unreachable_url()
        assert other is not None and other.startswith("sqs://")
        app = App("down", backend=other)
        job = app.job(name="down")(lambda: None)
        with pytest.raises(BrokerUnavailable):
            job.enqueue()
        app.close()
    finally:
        probe.close()


# -- the re-delay path in real time (hops shortened from 900 s to 2 s) -------------------------


def _collect_until(transport: SqsTransport, queue: str, timeout: float) -> list[tuple[float, Any]]:
    """(end time of the receive call, delivery) for everything received within `timeout` s."""
    got: list[tuple[float, Any]] = []
    deadline = time.time() + timeout
    while time.time() < deadline and not got:
        for delivery in transport.receive(
            [queue], max_messages=10, wait=timedelta(seconds=1), lease=LONG
        ):
            got.append((time.time(), delivery))
    return got


def test_delay_of_several_hops_is_held_until_due_and_delivered_once(
    moto: MotoServer, prefix: str
) -> None:
    transport = SqsTransport(parse_url(moto.url(prefix=prefix, delay_hop="2")))
    try:
        due = time.time() + 7
        transport.send([Message(queue="q", body=b"x", id="d", delay=timedelta(seconds=7))])
        got = _collect_until(transport, "q", timeout=30)
        ((ended, delivery),) = got
        assert ended >= due  # a call that ended before the due time returned nothing
        assert (delivery.id, delivery.deliveries) == ("d", 1)  # the hops were not attempts
        assert transport.receive(["q"], max_messages=10, wait=timedelta(0), lease=LONG) == []
    finally:
        transport.close()


def test_release_longer_than_a_hop_is_held_until_due_and_counts_one_delivery(
    moto: MotoServer, prefix: str
) -> None:
    transport = SqsTransport(parse_url(moto.url(prefix=prefix, delay_hop="2")))
    try:
        transport.send([Message(queue="q", body=b"x", id="r")])
        (first,) = receive_n(transport, "q", 1)
        due = time.time() + 5
        transport.release(first, delay=timedelta(seconds=5))
        ((ended, again),) = _collect_until(transport, "q", timeout=30)
        assert ended >= due
        assert (again.id, again.deliveries) == ("r", 2)
    finally:
        transport.close()
