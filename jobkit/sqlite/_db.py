"""Opening the SQLite file: pragmas, the schema, fork safety and error translation."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from jobkit.errors import BrokerUnavailable, ConfigurationError
from jobkit.sqlite._schema import ensure_schema

SYNCHRONOUS = ("normal", "full")

DEFAULT_BUSY_TIMEOUT = timedelta(seconds=30)


def connect(path: str, *, synchronous: str, busy_timeout: timedelta) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, schema in place."""
    if synchronous not in SYNCHRONOUS:
        raise ConfigurationError(
            f"synchronous={synchronous!r} is not supported; use one of {', '.join(SYNCHRONOUS)}"
        )
    with translate(path, "open"), _unopenable_is_configuration(path):
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout.total_seconds(),
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            _retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"), busy_timeout)
            conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            ensure_schema(conn, path)
        except BaseException:
            conn.close()
            raise
    return conn


_UNOPENABLE = ("unable to open database file", "readonly database", "not a database")


class DatabaseUnopenable(BrokerUnavailable, ConfigurationError):
    """The database file cannot be opened or written at all (a directory, no permission).

    Both: the configuration names a file jobkit cannot use (the CLI exits 2, a usage error),
    and the queue cannot be reached (an enqueue raises `BrokerUnavailable`, as for any outage;
    a running worker waits for the file to come back).
    """


@contextmanager
def _unopenable_is_configuration(path: str) -> Iterator[None]:
    """Turn "cannot open this file at all" into `DatabaseUnopenable`."""
    try:
        yield
    except sqlite3.Error as exc:
        if any(text in str(exc) for text in _UNOPENABLE):
            raise DatabaseUnopenable(
                f"SQLite database {path}: cannot open it ({exc}); point the URL at a file in a "
                "directory this user can write, e.g. sqlite:///jobkit.db"
            ) from exc
        raise


def _retry_busy(action: Callable[[], object], busy_timeout: timedelta) -> None:
    """Switching to WAL needs a moment alone with the file; retry while another opener has it."""
    deadline = time.monotonic() + busy_timeout.total_seconds()
    while True:
        try:
            action()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextmanager
def translate(path: str, doing: str) -> Iterator[None]:
    """Turn sqlite3 errors into `BrokerUnavailable` naming the file and the operation."""
    try:
        yield
    except sqlite3.Error as exc:
        raise BrokerUnavailable(
            f"SQLite database {path}: could not {doing}: {exc}. Check that the file and its "
            f"directory are writable and that no other program holds a long write lock on it"
        ) from exc


class Handle:
    """One connection guarded by a lock, reopened in a forked child instead of being shared.

    SQLite connections must not cross a fork; a child process that inherits a `Handle` opens a
    connection of its own on first use (the inherited one is abandoned, not closed).
    """

    def __init__(self, path: str, *, synchronous: str, busy_timeout: timedelta) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._closed = False
        self.conn()  # open now, so a bad path fails at construction

    def conn(self) -> sqlite3.Connection:
        if self._closed:
            raise BrokerUnavailable(f"SQLite database {self.path}: used after close()")
        if self._conn is None or self._pid != os.getpid():
            self._conn = connect(
                self.path, synchronous=self.synchronous, busy_timeout=self.busy_timeout
            )
            self._pid = os.getpid()
        return self._conn

    @contextmanager
    def write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        with self.lock, translate(self.path, doing):
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self, doing: str) -> Iterator[sqlite3.Connection]:
        """The connection for autocommit statements (each statement its own transaction)."""
        with self.lock, translate(self.path, doing):
            yield self.conn()

    def close(self) -> None:
        with self.lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None
            self._closed = True
