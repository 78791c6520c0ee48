"""`SqliteTransport`: leased delivery from one SQLite file, shared by processes on one host."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from jobkit.capabilities import Capabilities, MigrationSupport
from jobkit.clock import Clock, SystemClock
from jobkit.records import DeadLetter, Delivery, ExportedJob, Message, QueueStats
from jobkit.sqlite import _migration
from jobkit.sqlite._db import DEFAULT_BUSY_TIMEOUT, Handle
from jobkit.sqlite._schema import DEAD, DELAYED, LEASED, MESSAGES, READY
from jobkit.transport import Transport
from jobkit.transport_backend import replay_body

_CAPABILITIES = Capabilities(
    name="sqlite",
    redelivery="lease expiry",
    redelivery_after=None,  # the worker's lease decides
    # a blocked receive looks for due messages at least every _LONGEST_NAP (0.1 s)
    scheduling_precision=timedelta(milliseconds=200),
    dead_letter=True,
    max_delay=None,
    priorities=10,
    time_limits=True,
    lease_extension=True,
    results=True,
    shared_across_processes=True,
    migration=MigrationSupport(delayed_before_due=True, dead_letters=True, dedup="native"),
    survives_broker_restart=True,  # the messages are rows in a file
)

_FIRST_NAP = 0.005
_LONGEST_NAP = 0.1


class SqliteTransport(Transport):
    """Messages in one SQLite file (WAL mode), shared safely by threads and processes.

    `receive` takes the write lock (``BEGIN IMMEDIATE``) before choosing messages, so two
    processes never lease the same message. Each lease stores a fresh random token on the row;
    the receipt is ``"<seq>:<token>"`` and ack / release / extend / dead_letter change the row
    only while the token still matches, so a stale receipt never touches a newer delivery. A
    lease that ran out but was not yet delivered again still matches (nobody else holds it).

    Durability: ``synchronous="normal"`` (the default) survives the kill of any process at any
    moment, which is the fault jobkit guards against; an OS crash or power loss can undo the
    last transactions before it (a sent message can vanish, an acked one come back), never
    corrupt the file. ``synchronous="full"`` closes that window at about 0.5 ms per commit.

    Thread-safe (one connection behind a lock); `clone` gives a thread its own connection.
    A forked child reopens the file instead of sharing the parent's connection.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._db = Handle(path, synchronous=synchronous, busy_timeout=busy_timeout)

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    def clone(self) -> SqliteTransport:
        return SqliteTransport(
            self.path,
            synchronous=self._db.synchronous,
            busy_timeout=self._db.busy_timeout,
            clock=self._clock,
        )

    def close(self) -> None:
        self._db.close()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        now = self._now()
        rows = [
            (
                m.queue,
                m.id,
                m.body,
                m.priority,
                DELAYED if m.delay > timedelta(0) else READY,
                now + max(m.delay.total_seconds(), 0.0),
                m.dedup_key,
                now,
            )
            for m in messages
        ]
        with self._db.write("send messages") as conn:
            conn.executemany(
                f"INSERT INTO {MESSAGES} "
                "(queue, id, body, priority, state, due, deliveries, dedup_key, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?)",
                rows,
            )

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Polls, sleeping 5 ms growing to 100 ms, until something is due or `wait` passed."""
        names = list(dict.fromkeys(queues))
        if not names or max_messages <= 0:
            return []
        deadline = time.monotonic() + max(wait.total_seconds(), 0.0)
        nap = _FIRST_NAP
        while True:
            if self._anything_due(names):
                got = self._lease(names, max_messages, lease)
                if got:
                    return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(nap, remaining))
            nap = min(nap * 2, _LONGEST_NAP)

    def _anything_due(self, names: list[str]) -> bool:
        """A read without the write lock, so idle pollers do not queue up behind writers."""
        marks = ", ".join("?" * len(names))
        with self._db.read("look for due messages") as conn:
            row = conn.execute(
                f"SELECT EXISTS (SELECT 1 FROM {MESSAGES} "
                f"  WHERE queue IN ({marks}) AND state = '{READY}') "
                f"OR EXISTS (SELECT 1 FROM {MESSAGES} "
                f"  WHERE queue IN ({marks}) AND state IN ('{DELAYED}', '{LEASED}') AND due <= ?)",
                (*names, *names, self._now()),
            ).fetchone()
        return bool(row[0])

    def _lease(self, names: list[str], limit: int, lease: timedelta) -> list[Delivery]:
        marks = ", ".join("?" * len(names))
        best_per_queue = " UNION ALL ".join(
            [
                f"SELECT * FROM (SELECT seq, priority FROM {MESSAGES} "
                f"WHERE queue = ? AND state = '{READY}' ORDER BY priority DESC, seq LIMIT ?)"
            ]
            * len(names)
        )
        with self._db.write("receive messages") as conn:
            now = self._now()
            until = now + lease.total_seconds()
            conn.execute(
                f"UPDATE {MESSAGES} SET state = '{READY}', held = NULL "
                f"WHERE queue IN ({marks}) AND state IN ('{DELAYED}', '{LEASED}') AND due <= ? "
                "AND (held IS NULL OR held <= ?)",
                (*names, now, now),
            )
            rows = conn.execute(
                f"UPDATE {MESSAGES} SET state = '{LEASED}', due = ?, "
                "deliveries = deliveries + 1, token = lower(hex(randomblob(8))) "
                f"WHERE seq IN (SELECT seq FROM ({best_per_queue}) "
                "ORDER BY priority DESC, seq LIMIT ?) "
                "RETURNING seq, queue, id, body, deliveries, token, priority",
                (until, *[arg for name in names for arg in (name, limit)], limit),
            ).fetchall()
        rows.sort(key=lambda row: (-row[6], row[0]))
        leased_until = datetime.fromtimestamp(until, UTC)
        return [
            Delivery(
                queue=queue,
                id=job_id,
                body=bytes(body),
                deliveries=deliveries,
                receipt=f"{seq}:{token}",
                leased_until=leased_until,
            )
            for seq, queue, job_id, body, deliveries, token, _ in rows
        ]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """One transaction for the whole batch."""
        if not deliveries:
            return
        with self._db.write("ack messages") as conn:
            conn.executemany(
                f"DELETE FROM {MESSAGES} WHERE seq = ? AND token = ?",
                [_parse_receipt(d.receipt) for d in deliveries],
            )

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._release(delivery, delay, uncount=0)

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """Native: one UPDATE that also takes this delivery off the count. Idempotent."""
        self._release(delivery, delay, uncount=1)

    def _release(self, delivery: Delivery, delay: timedelta, *, uncount: int) -> None:
        seconds = max(delay.total_seconds(), 0.0)
        with self._db.read("release a message") as conn:
            conn.execute(
                f"UPDATE {MESSAGES} SET state = ?, due = ?, token = NULL, "
                "deliveries = MAX(deliveries - ?, 0) WHERE seq = ? AND token = ?",
                (
                    DELAYED if seconds > 0 else READY,
                    self._now() + seconds,
                    uncount,
                    *_parse_receipt(delivery.receipt),
                ),
            )

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        names = list(dict.fromkeys(queues))
        if not names:
            return []
        with self._db.read("peek at waiting messages") as conn:
            rows = conn.execute(
                f"SELECT body FROM {MESSAGES} WHERE queue IN ({', '.join('?' * len(names))}) "
                f"AND state IN ('{READY}', '{DELAYED}', '{LEASED}') ORDER BY seq LIMIT ?",
                (*names, max(limit, 0)),
            ).fetchall()
        return [bytes(body) for (body,) in rows]

    # -- migration (SQL in `jobkit.sqlite._migration`) -----------------------------------------

    def export(
        self,
        queues: Sequence[str],
        *,
        max_messages: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """Native: ready, delayed (with their remaining delay) and dead rows, in one write
        transaction; a row a worker holds is skipped until its lease ends."""
        names = list(dict.fromkeys(queues))
        if not names or max_messages <= 0:
            return []
        with self._db.write("export messages") as conn:
            return _migration.export(
                conn,
                names,
                limit=max_messages,
                lease=lease,
                include_dead=include_dead,
                now=self._now(),
            )

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        with self._db.write("delete exported messages") as conn:
            return _migration.commit(conn, jobs)

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        with self._db.write("release exported messages") as conn:
            _migration.release(conn, jobs, now=self._now())

    def import_messages(self, jobs: Sequence[ExportedJob]) -> set[str]:
        """Native and idempotent: the id lookup and the insert are one transaction."""
        with self._db.write("import messages") as conn:
            return _migration.import_rows(conn, jobs, now=self._now())

    def present(self, ids: Sequence[str]) -> set[str] | None:
        with self._db.read("look up messages by id") as conn:
            return _migration.present(conn, ids)

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        with self._db.read("dead-letter a message") as conn:
            conn.execute(
                f"UPDATE {MESSAGES} SET state = '{DEAD}', due = ?, reason = ?, token = NULL "
                "WHERE seq = ? AND token = ?",
                (self._now(), reason, *_parse_receipt(delivery.receipt)),
            )

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        with self._db.read("extend a lease") as conn:
            conn.execute(
                f"UPDATE {MESSAGES} SET state = '{LEASED}', due = ? WHERE seq = ? AND token = ?",
                (self._now() + lease.total_seconds(), *_parse_receipt(delivery.receipt)),
            )

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        with self._db.read("list dead letters") as conn:
            rows = conn.execute(
                f"SELECT id, body, reason, due, deliveries FROM {MESSAGES} "
                f"WHERE queue = ? AND state = '{DEAD}' ORDER BY due, seq LIMIT ?",
                (queue, max(limit, 0)),
            ).fetchall()
        return [
            DeadLetter(
                queue=queue,
                id=job_id,
                body=bytes(body),
                reason=reason or "",
                dead_at=datetime.fromtimestamp(dead_at, UTC),
                deliveries=deliveries,
            )
            for job_id, body, reason, dead_at, deliveries in rows
        ]

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """One transaction: each message is either dead or ready at any moment, never both."""
        wanted = None if ids is None else set(ids)
        with self._db.write("replay dead letters") as conn:
            rows = conn.execute(
                f"SELECT seq, id, body FROM {MESSAGES} WHERE queue = ? AND state = '{DEAD}'",
                (queue,),
            ).fetchall()
            now = self._now()
            chosen = [
                (replay_body(bytes(body)), now, seq)
                for seq, job_id, body in rows
                if wanted is None or job_id in wanted
            ]
            conn.executemany(
                f"UPDATE {MESSAGES} SET state = '{READY}', body = ?, due = ?, deliveries = 0, "
                "token = NULL, reason = NULL WHERE seq = ?",
                chosen,
            )
        return len(chosen)

    def purge(self, queue: str) -> int:
        with self._db.read("purge dead letters") as conn:
            cursor = conn.execute(
                f"DELETE FROM {MESSAGES} WHERE queue = ? AND state = '{DEAD}'", (queue,)
            )
            return cursor.rowcount

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """A row a migrator holds (see `export`) counts as in flight."""
        names = None if queues is None else list(dict.fromkeys(queues))
        where = "" if names is None else f"WHERE queue IN ({', '.join('?' * len(names))})"
        now = self._now()
        with self._db.read("read queue stats") as conn:
            rows = conn.execute(
                "SELECT queue, "
                f"  TOTAL(state = '{READY}' OR (state IN ('{DELAYED}', '{LEASED}') AND due <= ? "
                "    AND (held IS NULL OR held <= ?))),"
                f"  TOTAL((state = '{LEASED}' AND due > ?) "
                f"    OR (state IN ('{DELAYED}', '{DEAD}') AND held > ?)),"
                f"  TOTAL(state = '{DELAYED}' AND due > ? AND (held IS NULL OR held <= ?)),"
                f"  TOTAL(state = '{DEAD}' AND (held IS NULL OR held <= ?)) "
                f"FROM {MESSAGES} {where} GROUP BY queue ORDER BY queue",
                (now, now, now, now, now, now, now, *(names or ())),
            ).fetchall()
        found = {
            queue: QueueStats(
                queue=queue,
                ready=int(ready),
                in_flight=int(in_flight),
                delayed=int(delayed),
                dead=int(dead),
            )
            for queue, ready, in_flight, delayed, dead in rows
        }
        if names is None:
            return list(found.values())
        return [
            found.get(name, QueueStats(queue=name, ready=0, in_flight=0, delayed=0, dead=0))
            for name in names
        ]


def _parse_receipt(receipt: str) -> tuple[int, str]:
    seq, sep, token = receipt.partition(":")
    if not sep or not seq.isdigit():
        raise ValueError(f"{receipt!r} is not a receipt of a SqliteTransport")
    return int(seq), token
