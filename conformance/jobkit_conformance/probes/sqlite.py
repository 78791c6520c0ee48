"""The probe for ``sqlite://``: reads the jobkit tables with the `sqlite3` module directly.

Schema (jobkit/sqlite/_schema.py, version 1): ``jobkit_messages(seq, queue, id, body, priority,
state in ready|delayed|leased|dead, due, deliveries, token, dedup_key, enqueued_at, reason)``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlsplit

from jobkit import ConfigurationError
from jobkit.spi import Backend
from jobkit_conformance.probes import DeadEntry

MESSAGES = "jobkit_messages"


def sqlite_path(url: str) -> str:
    """The file of a ``[...+]sqlite:///relative.db`` or ``sqlite:////absolute.db`` URL."""
    rest = url.split("://", 1)[1]
    path = urlsplit("x://" + rest).path if "?" in rest else rest
    if not path.startswith("/") or path == "/":
        raise ConfigurationError(f"cannot find the database file in {url!r}")
    return path[1:]


class SqliteProbe:
    def __init__(self, path: str) -> None:
        self.path = path

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 30000")
            yield conn
        finally:
            conn.close()

    def depth(self, queue: str) -> int:
        with self._db() as db:
            (n,) = db.execute(
                f"SELECT COUNT(*) FROM {MESSAGES} WHERE queue = ? AND state != 'dead'", (queue,)
            ).fetchone()
        return int(n)

    def dead(self, queue: str) -> list[DeadEntry]:
        with self._db() as db:
            rows = db.execute(
                f"SELECT id, body, reason FROM {MESSAGES} WHERE queue = ? AND state = 'dead' "
                "ORDER BY seq",
                (queue,),
            ).fetchall()
        return [DeadEntry(id=str(r[0]), body=bytes(r[1]), reason=str(r[2] or "")) for r in rows]

    def inject_raw(self, queue: str, body: bytes, *, id: str) -> None:
        now = time.time()
        with self._db() as db:
            db.execute(
                f"INSERT INTO {MESSAGES} (queue, id, body, priority, state, due, deliveries, "
                "enqueued_at) VALUES (?, ?, ?, 0, 'ready', ?, 0, ?)",
                (queue, id, body, now, now),
            )

    def is_empty(self, queues: Sequence[str]) -> bool:
        marks = ",".join("?" for _ in queues)
        with self._db() as db:
            (n,) = db.execute(
                f"SELECT COUNT(*) FROM {MESSAGES} WHERE queue IN ({marks})", tuple(queues)
            ).fetchone()
        return int(n) == 0

    def cleanup(self, queues: Sequence[str]) -> None:
        marks = ",".join("?" for _ in queues)
        with self._db() as db:
            db.execute(f"DELETE FROM {MESSAGES} WHERE queue IN ({marks})", tuple(queues))

    def unreachable_url(self) -> str | None:
        # a "database file" that is a directory: the directory exists, the file cannot be opened
        target = os.path.abspath(self.path) + "-unreachable.d"
        os.makedirs(target, exist_ok=True)
        return "sqlite:///" + target

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.abspath(self.path) + "-unreachable.d")


def probe_from_url(url: str, backend: Backend) -> SqliteProbe:
    return SqliteProbe(sqlite_path(url))
