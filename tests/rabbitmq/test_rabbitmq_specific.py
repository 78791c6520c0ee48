"""What is particular to RabbitMQ: the URL, the broker's delivery limit as a crash-loop
backstop, the layout jobkit declares, and stale receipts after a reconnect."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from jobkit_rabbitmq import RabbitTransport, parse_url
from jobkit_rabbitmq import _wire as wire

from jobkit import App, ConfigurationError, UnsupportedFeature
from jobkit.spi import Delivery, Message, redact_url
from tests.rabbitmq.conftest import url_of
from tests.servers.rabbitmq import RabbitServer
from tests.waiting import wait_until

WAIT = timedelta(seconds=0.5)
LONG = timedelta(seconds=60)


def _receive_all(transport: RabbitTransport, count: int) -> list[Delivery]:
    """`count` deliveries from queue "q", taken over as many receives as it needs."""
    got: list[Delivery] = []

    def more() -> bool:
        got.extend(transport.receive(["q"], max_messages=count, wait=WAIT, lease=LONG))
        return len(got) >= count

    wait_until(more, what=f"{count} deliveries")
    return got


def test_url_gives_host_port_vhost_and_credentials() -> None:
    config = parse_url("amqps://app:s%40cret@rabbit.example:5999/jobs%2Fprod?queue_type=classic")
    assert (config.tls, config.host, config.port, config.vhost) == (
        True,
        "rabbit.example",
        5999,
        "jobs/prod",
    )
    assert (config.username, config.password, config.queue_type) == ("app", "s@cret", "classic")
    assert config.priorities == 10
    assert parse_url("amqp://h//").vhost == "/"
    assert parse_url("amqp://h").port == 5672
    assert parse_url("amqp://h").priorities == 1  # quorum queues have none


@pytest.mark.parametrize(
    ("query", "named"),
    [("queue_type=stream", "queue_type"), ("heartbeat=0", "heartbeat"), ("bogus=1", "bogus"),
     ("store=redis://x", "store")],
)  # fmt: skip
def test_bad_option_is_refused_naming_it_without_the_password(query: str, named: str) -> None:
    from jobkit_rabbitmq import backend_from_url

    url = f"amqp://app:topsecret@h/%2F?{query}"
    with pytest.raises(ConfigurationError, match=named) as info:
        backend_from_url(url)
    assert "topsecret" not in str(info.value)
    assert "topsecret" not in redact_url(url)


@pytest.mark.parametrize("delay_s", [0.0004, 0.0015, 1.0, 5.0004, 8.0, 86_400.0009])
def test_a_due_time_on_the_wire_is_never_before_the_delay_has_passed(delay_s: float) -> None:
    """`jobkit-due` is compared with the current epoch ms rounded down: a due time rounded
    down too would let a job start up to 1 ms before its delay ends (seen: 8 s ran at 7.9999)."""
    for _ in range(200):
        before = time.time()
        due = wire.due_after(delay_s)
        assert due / 1000 >= before + delay_s


def test_reserved_queue_names_are_refused() -> None:
    config = parse_url("amqp://h")
    for name in ("a.dlq", "x.delay.5", "y.queues"):
        with pytest.raises(ConfigurationError, match="reserved"):
            config.queue_name(name)


def test_priority_on_a_quorum_queue_is_refused_at_send(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    try:
        with pytest.raises(UnsupportedFeature, match="classic"):
            transport.send([Message(queue="q", body=b"x", id="1", priority=3)])
    finally:
        transport.close()


def test_the_brokers_delivery_limit_dead_letters_a_crash_loop_instead_of_dropping_it(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix, delivery_limit="2")))
    link = transport._link
    try:
        transport.send([Message(queue="q", body=b"crashy", id="loop")])
        for _ in range(3):  # three deliveries whose consumer dies: returned uncounted by jobkit
            got = wait_until(
                lambda: transport.receive(["q"], max_messages=1, wait=WAIT, lease=LONG),
                timeout=20,
                what="a delivery",
            )
            assert [d.id for d in got] == ["loop"]
            link.call(lambda s: s.connection.close(), "drop the connection")
        (dead,) = wait_until(lambda: transport.dead_letters("q"), timeout=20, what="the DLQ")
        assert (dead.id, dead.body) == ("loop", b"crashy")
        assert "delivery limit" in dead.reason
        assert transport.receive(["q"], max_messages=1, wait=WAIT, lease=LONG) == []
    finally:
        transport.close()


def test_a_stale_ack_after_a_reconnect_does_not_close_the_channel(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    link = transport._link
    try:
        transport.send(
            [Message(queue="q", body=b"a", id="1"), Message(queue="q", body=b"b", id="2")]
        )
        old = wait_until(
            lambda: transport.receive(["q"], max_messages=2, wait=WAIT, lease=LONG),
            what="two deliveries",
        )
        link.call(lambda s: s.connection.close(), "drop the connection")
        again = _receive_all(transport, 2)
        generation = link.generation
        transport.ack(old)  # stale: a no-op, not an unknown delivery tag on the new channel
        transport.ack(again)
        assert link.generation == generation
        (stats,) = transport.stats(["q"])
        assert (stats.ready, stats.in_flight) == (0, 0)
    finally:
        transport.close()


def test_acking_around_a_held_delivery_leaves_it_held(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    """The oldest held deliveries are acked with one multiple ack: it must stop at one still
    held, which comes back when the connection drops, and only it."""
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    link = transport._link
    try:
        transport.send([Message(queue="q", body=b"x", id=str(i)) for i in range(5)])
        got = _receive_all(transport, 5)
        assert [d.id for d in got] == ["0", "1", "2", "3", "4"]
        transport.ack([got[0], got[1], got[3]])  # "0" and "1" in one frame, "3" alone
        transport.ack([got[4]])  # "2" still held: "4" alone
        link.call(lambda s: s.connection.close(), "drop the connection")
        back = wait_until(
            lambda: transport.receive(["q"], max_messages=5, wait=WAIT, lease=LONG),
            what="the held delivery again",
        )
        assert [d.id for d in back] == ["2"]
        transport.ack(back)
        assert transport.receive(["q"], max_messages=5, wait=WAIT, lease=LONG) == []
        (stats,) = transport.stats(["q"])
        assert (stats.ready, stats.in_flight) == (0, 0)
    finally:
        transport.close()


def test_a_receive_that_enough_waiting_deliveries_answer_makes_no_call_through_the_io_thread(
    rabbit_server: RabbitServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consume call (declare, consume, grow the window) is a round trip through the I/O
    thread; a receive that deliveries already waiting can answer does without it."""
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    link = transport._link
    try:
        assert transport.receive(["q"], max_messages=20, wait=WAIT, lease=LONG) == []
        transport.send([Message(queue="q", body=b"x", id=str(i)) for i in range(20)])
        wait_until(lambda: len(link.inbox) == 20, what="20 deliveries in the inbox")
        calls: list[str] = []
        through_io = link.call
        monkeypatch.setattr(
            link, "call", lambda fn, what: calls.append(what) or through_io(fn, what)
        )
        got = transport.receive(["q"], max_messages=20, wait=WAIT, lease=LONG)
        assert calls == []
        assert [d.id for d in got] == [str(i) for i in range(20)]
        transport.ack(got)
        assert transport.receive(["q"], max_messages=1, wait=WAIT, lease=LONG) == []
        assert "consume" in calls  # nothing waited: the round trip is made again
    finally:
        transport.close()


def test_a_queue_whose_consumer_was_cancelled_is_consumed_again_while_others_deliveries_wait(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    """Deliveries waiting from one queue do not keep a receive from consuming again a queue
    whose consumer RabbitMQ cancelled (the queue was deleted, then declared again)."""
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    link = transport._link
    native = transport.config.queue_name("b")
    try:
        assert transport.receive(["a", "b"], max_messages=20, wait=WAIT, lease=LONG) == []
        transport.send([Message(queue="a", body=b"x", id=f"a{i}") for i in range(20)])
        wait_until(lambda: len(link.inbox) == 20, what="20 deliveries from a in the inbox")
        link.call(lambda s: s.admin_channel().queue_delete(native), "delete queue b")
        wait_until(lambda: not link.consuming([native]), what="b's consumer cancelled")
        got = transport.receive(["a", "b"], max_messages=1, wait=WAIT, lease=LONG)
        assert link.consuming([native])  # consumed again although 19 deliveries still wait
        transport.send([Message(queue="b", body=b"y", id="b0")])
        for _ in range(30):
            got += transport.receive(["a", "b"], max_messages=20, wait=WAIT, lease=LONG)
            if len(got) == 21:
                break
        assert sorted(d.id for d in got) == sorted([f"a{i}" for i in range(20)] + ["b0"])
        transport.ack(got)
    finally:
        transport.close()


def test_without_a_shared_store_keys_and_records_are_refused_naming_the_store_option(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    app = App("no-store")
    app.use(url_of(rabbit_server, prefix))  # store=memory, the default

    @app.job(queue="work")
    def noop() -> None: ...

    try:
        with pytest.raises(UnsupportedFeature, match="store=sqlite"):
            noop.options(idempotency_key="once").enqueue()
        handle = noop.enqueue()
        with pytest.raises(UnsupportedFeature, match="store="):
            handle.record()
        assert app.backend.stats(["work"])[0].ready == 1  # the keyed one was not sent
    finally:
        app.close()


def test_a_delay_that_fell_due_while_its_queue_was_missing_arrives_once_the_queue_is_back(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    """After a broker restart a delay queue can expire messages before its target queue has
    recovered; the broker's at-least-once dead-lettering then resends them only after its
    ``dead_letter_worker_publisher_confirm_timeout`` (180 s unless configured). Here the target
    is deleted instead (deterministically unavailable) while the delay falls due."""
    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    link = transport._link
    native = transport.config.queue_name("q")
    try:
        transport.send([Message(queue="q", body=b"d", id="late", delay=timedelta(seconds=2))])
        link.call(lambda s: s.admin_channel().queue_delete(native), "delete the main queue")
        time.sleep(3)  # the fault: the delay queue expires the message while its target is gone
        link.declared.discard(native)  # receive declares it again
        got = wait_until(
            lambda: transport.receive(["q"], max_messages=1, wait=WAIT, lease=LONG),
            timeout=30,
            what="the delayed message after its queue came back",
        )
        assert [d.id for d in got] == ["late"]
    finally:
        transport.close()


def test_surviving_a_restart_is_claimed_only_for_a_server_stating_a_short_dead_letter_retry() -> (
    None
):
    from jobkit_rabbitmq import capabilities_for

    default = parse_url("amqp://h")  # the server's default: 180 s before a refused move is retried
    stated = parse_url("amqp://h?dead_letter_retry=5")
    assert not capabilities_for(default, results=False).survives_broker_restart
    assert capabilities_for(stated, results=False).survives_broker_restart


def test_single_sends_from_many_threads_at_once_are_all_stored(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    """A producer's sends run in the calling thread while the connection is free; the other
    threads' sends (and a stats call) wait for it or go through the I/O thread, none lost."""
    import threading

    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        clone = transport.clone()
        try:
            for i in range(100):
                clone.send([Message(queue="q", body=b"x", id=f"{worker}-{i}")])
                if i % 25 == 0:
                    clone.stats(["q"])
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            clone.close()

    try:
        threads = [threading.Thread(target=produce, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        (stats,) = transport.stats(["q"])
        assert stats.ready == 800
        got = _receive_all(transport, 800)
        assert len({d.id for d in got}) == 800
        transport.ack(got)
    finally:
        transport.close()


def test_a_single_send_to_a_queue_deleted_meanwhile_is_refused_then_declared_again(
    rabbit_server: RabbitServer, prefix: str
) -> None:
    """RabbitMQ returns a message it cannot route: the send raises (nothing was stored), and
    the next send declares the queue again."""
    from jobkit import JobkitError

    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    native = transport.config.queue_name("q")
    try:
        transport.send([Message(queue="q", body=b"x", id="first")])
        transport._link.call(lambda s: s.admin_channel().queue_delete(native), "delete q")
        with pytest.raises(JobkitError, match="no queue"):
            transport.send([Message(queue="q", body=b"x", id="lost")])
        transport.send([Message(queue="q", body=b"x", id="again")])
        assert [d.id for d in _receive_all(transport, 1)] == ["again"]
    finally:
        transport.close()


def test_a_producers_send_runs_in_the_calling_thread_until_the_link_consumes(
    rabbit_server: RabbitServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without consumers, a send publishes from the calling thread (two thread switches fewer
    per enqueue); once the link consumes, sends go through its I/O thread again."""
    import threading

    transport = RabbitTransport(parse_url(url_of(rabbit_server, prefix)))
    threads: list[threading.Thread] = []
    publish = wire.publish

    def recorded(*args: object, **kwargs: object) -> None:
        threads.append(threading.current_thread())
        publish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(wire, "publish", recorded)
    try:
        transport.send([Message(queue="q", body=b"x", id="connects")])
        threads.clear()
        transport.send([Message(queue="q", body=b"x", id=str(i)) for i in range(3)])
        transport.send([Message(queue="q", body=b"x", id="3")])
        assert threads == [threading.current_thread()] * 2
        got = _receive_all(transport, 5)  # now it consumes
        threads.clear()
        transport.send([Message(queue="q", body=b"x", id="4")])
        assert [t.name for t in threads] == ["jobkit-rabbitmq-io"]
        transport.ack(got + _receive_all(transport, 1))
    finally:
        transport.close()
