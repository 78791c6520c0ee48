"""SqliteTransport: the transport contract with short real leases, plus SQLite specifics."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import BrokerUnavailable, ConfigurationError
from jobkit.spi import Envelope, Message, Transport, TransportBackend, open_backend
from jobkit.sqlite import SCHEMA_VERSION, SqliteJobStore, SqliteTransport, backend_from_url
from tests.transport_contract import TransportContract

LONG = timedelta(seconds=60)
NOW = timedelta(0)


class TestSqliteTransportContract(TransportContract):
    short = timedelta(seconds=0.3)

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path: Path) -> None:
        self.directory = tmp_path

    def make_transport(self) -> Transport:
        return SqliteTransport(str(self.directory / "jobs.db"))

    def lapse(self, delta: timedelta) -> None:
        time.sleep(delta.total_seconds())  # the point: let a real lease or delay run out


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.fixture
def transport(db: str) -> SqliteTransport:
    return SqliteTransport(db)


def _send(transport: Transport, *bodies: bytes, queue: str = "q") -> None:
    transport.send([Message(queue=queue, body=b, id=b.decode()) for b in bodies])


def test_messages_survive_closing_and_reopening_the_file(db: str) -> None:
    first = SqliteTransport(db)
    _send(first, b"kept")
    first.close()
    second = SqliteTransport(db)
    (got,) = second.receive(["q"], max_messages=5, wait=NOW, lease=LONG)
    assert got.body == b"kept"


def test_clone_has_its_own_connection_and_sees_the_same_queues(
    transport: SqliteTransport,
) -> None:
    other = transport.clone()
    assert other is not transport
    _send(transport, b"a")
    (got,) = other.receive(["q"], max_messages=5, wait=NOW, lease=LONG)
    transport.ack([got])
    assert other.stats(["q"])[0].in_flight == 0
    other.close()


def test_two_threads_with_clones_never_lease_the_same_message(
    transport: SqliteTransport,
) -> None:
    transport.send([Message(queue="q", body=b"x", id=str(i)) for i in range(1000)])
    seen: list[list[str]] = [[], []]

    def consume(index: int) -> None:
        mine = transport.clone()
        try:
            while got := mine.receive(["q"], max_messages=9, wait=NOW, lease=LONG):
                seen[index].extend(d.id for d in got)
                mine.ack(got)
        finally:
            mine.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen[0] + seen[1], key=int) == [str(i) for i in range(1000)]


def test_receive_leases_a_whole_batch_with_one_lease_end(transport: SqliteTransport) -> None:
    _send(transport, *[str(i).encode() for i in range(20)])
    got = transport.receive(["q"], max_messages=20, wait=NOW, lease=LONG)
    assert [d.body for d in got] == [str(i).encode() for i in range(20)]
    assert len({d.leased_until for d in got}) == 1
    assert len({d.receipt for d in got}) == 20


def test_receive_polls_until_a_delayed_message_is_due(transport: SqliteTransport) -> None:
    transport.send([Message(queue="q", body=b"soon", id="1", delay=timedelta(seconds=0.3))])
    got = transport.receive(["q"], max_messages=1, wait=timedelta(seconds=30), lease=LONG)
    assert [d.body for d in got] == [b"soon"]


def test_malformed_receipt_is_refused(transport: SqliteTransport) -> None:
    _send(transport, b"a")
    (got,) = transport.receive(["q"], max_messages=1, wait=NOW, lease=LONG)
    forged = type(got)(queue="q", id=got.id, body=got.body, deliveries=1, receipt="nonsense")
    with pytest.raises(ValueError, match="not a receipt"):
        transport.ack([forged])


def test_forged_token_does_not_ack(transport: SqliteTransport) -> None:
    _send(transport, b"a")
    (got,) = transport.receive(["q"], max_messages=1, wait=NOW, lease=LONG)
    seq = got.receipt.split(":")[0]
    forged = type(got)(queue="q", id=got.id, body=got.body, deliveries=1, receipt=f"{seq}:0")
    transport.ack([forged])
    assert transport.stats(["q"])[0].in_flight == 1


def test_schema_version_is_recorded_in_user_version(db: str) -> None:
    SqliteTransport(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobkit_messages", "jobkit_jobs", "jobkit_done"} <= tables


def test_file_is_in_wal_mode(db: str) -> None:
    SqliteTransport(db).close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_file_from_a_newer_jobkit_is_refused(db: str) -> None:
    SqliteTransport(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(ConfigurationError, match="upgrade jobkit"):
        SqliteTransport(db)


def test_rows_are_readable_directly_as_documented(transport: SqliteTransport, db: str) -> None:
    body = Envelope(job="tasks.x").encode()
    transport.send([Message(queue="q", body=body, id="job-1", priority=4)])
    (got,) = transport.receive(["q"], max_messages=1, wait=NOW, lease=LONG)
    transport.dead_letter(got, reason="boom")
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT queue, id, body, priority, state, deliveries, token, reason "
            "FROM jobkit_messages"
        ).fetchone()
    assert row == ("q", "job-1", body, 4, "dead", 1, None, "boom")


def test_unopenable_location_is_a_configuration_error_and_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot open it") as info:
        SqliteTransport(str(tmp_path / "missing-dir" / "jobs.db"))
    assert isinstance(info.value, BrokerUnavailable)  # an enqueue raises it, as for an outage


def test_use_after_close_raises_broker_unavailable(transport: SqliteTransport) -> None:
    transport.close()
    transport.close()  # idempotent
    with pytest.raises(BrokerUnavailable, match="after close"):
        _send(transport, b"a")


def test_capabilities_claim_unlimited_delays_ten_priorities_and_sharing(
    transport: SqliteTransport,
) -> None:
    caps = transport.capabilities
    assert caps.name == "sqlite"
    assert (caps.max_delay, caps.priorities, caps.redelivery_after) == (None, 10, None)
    assert caps.dead_letter and caps.time_limits and caps.lease_extension and caps.results
    assert caps.shared_across_processes
    assert caps.redelivery == "lease expiry"


# -- URLs --------------------------------------------------------------------------------------


def test_relative_url_opens_file_in_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backend = backend_from_url("sqlite:///jobs.db")
    assert isinstance(backend.transport, SqliteTransport)
    assert isinstance(backend.store, SqliteJobStore)
    assert backend.default_lease == timedelta(seconds=30)
    backend.close()
    assert (tmp_path / "jobs.db").exists()


def test_absolute_url_with_lease_option(tmp_path: Path) -> None:
    backend = backend_from_url(f"sqlite:///{tmp_path}/abs.db?lease=12.5")
    assert backend.default_lease == timedelta(seconds=12.5)
    assert isinstance(backend.transport, SqliteTransport)
    assert backend.transport.path == f"{tmp_path}/abs.db"
    backend.close()


def test_open_backend_finds_sqlite_through_entry_point(tmp_path: Path) -> None:
    backend = open_backend(f"sqlite:///{tmp_path}/ep.db")
    assert isinstance(backend, TransportBackend)
    assert backend.capabilities.name == "sqlite"
    backend.close()


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("sqlite://host/jobs.db", "three slashes"),
        ("sqlite:///", "names no file"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///jobs.db?lease=-1", "positive number"),
        ("sqlite:///jobs.db?lease=soon", "positive number"),
        ("sqlite:///jobs.db?leese=3", "unknown option"),
        ("sqlite:///jobs.db?synchronous=off", "synchronous=full"),
        ("sqlite:////no/such/dir/jobs.db", "does not exist"),
    ],
)
def test_bad_url_raises_configuration_error_saying_what_to_write(url: str, hint: str) -> None:
    with pytest.raises(ConfigurationError, match=hint):
        backend_from_url(url)


def test_synchronous_option_sets_the_pragma(tmp_path: Path) -> None:
    for option, level in [("", 1), ("?synchronous=full", 2), ("?synchronous=NORMAL", 1)]:
        backend = backend_from_url(f"sqlite:///{tmp_path}/sync.db{option}")
        assert isinstance(backend.transport, SqliteTransport)
        conn = backend.transport._db.conn()
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == level
        backend.close()


def test_forked_child_reopens_the_file_instead_of_sharing_the_connection(
    transport: SqliteTransport,
) -> None:
    _send(transport, b"before")
    pid = os.fork()
    if pid == 0:  # child: use the inherited instance, then leave without cleanup
        try:
            _send(transport, b"from-child")
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    got = transport.receive(["q"], max_messages=5, wait=NOW, lease=LONG)
    assert sorted(d.body for d in got) == [b"before", b"from-child"]


def test_peek_lists_waiting_bodies_in_order_without_leasing(tmp_path: Path) -> None:
    transport = SqliteTransport(str(tmp_path / "peek.db"))
    transport.send([Message(queue="q", body=f"m{i}".encode(), id=str(i)) for i in range(3)])
    assert transport.peek(["q"]) == [b"m0", b"m1", b"m2"]
    assert transport.peek(["q"], limit=2) == [b"m0", b"m1"]
    assert transport.stats(["q"])[0].ready == 3
