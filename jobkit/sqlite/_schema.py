"""The one place the SQLite schema is defined, with its version and migrations.

The version lives in ``PRAGMA user_version``. A fresh file is at version 0; `ensure_schema` runs
every migration from the file's version up to `SCHEMA_VERSION` in one transaction. A file written
by a newer jobkit (a higher version) is refused rather than misread.
"""

from __future__ import annotations

import sqlite3

from jobkit.errors import ConfigurationError

SCHEMA_VERSION = 3

MESSAGES = "jobkit_messages"
JOBS = "jobkit_jobs"
DONE = "jobkit_done"

# State values of jobkit_messages.state.
READY = "ready"
DELAYED = "delayed"
LEASED = "leased"
DEAD = "dead"

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    # version 0 -> 1
    1: (
        f"""
        CREATE TABLE {MESSAGES} (
            seq         INTEGER PRIMARY KEY,
            queue       TEXT    NOT NULL,
            id          TEXT    NOT NULL,
            body        BLOB    NOT NULL,
            priority    INTEGER NOT NULL DEFAULT 0,
            state       TEXT    NOT NULL
                CHECK (state IN ('{READY}', '{DELAYED}', '{LEASED}', '{DEAD}')),
            due         REAL    NOT NULL,
            deliveries  INTEGER NOT NULL DEFAULT 0,
            token       TEXT,
            dedup_key   TEXT,
            enqueued_at REAL    NOT NULL,
            reason      TEXT
        )
        """,
        # receive: the best ready messages of a queue, in delivery order, without a sort
        f"CREATE INDEX {MESSAGES}_receive ON {MESSAGES} (queue, state, priority DESC, seq)",
        # receive (due delayed messages, expired leases), dead_letters (oldest first), stats
        f"CREATE INDEX {MESSAGES}_due ON {MESSAGES} (queue, state, due)",
        f"""
        CREATE TABLE {JOBS} (
            id              TEXT    PRIMARY KEY,
            job             TEXT    NOT NULL,
            state           TEXT    NOT NULL,
            attempts        INTEGER NOT NULL,
            errors          TEXT    NOT NULL,
            result          TEXT    NOT NULL,
            idempotency_key TEXT,
            updated_at      TEXT
        ) WITHOUT ROWID
        """,
        f"""
        CREATE TABLE {DONE} (
            key    TEXT PRIMARY KEY,
            job_id TEXT NOT NULL,
            at     TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ),
    # version 1 -> 2: retention. When a record was last written and a key completed, as Unix
    # seconds on the writer's clock, indexed so expired rows are found without a scan.
    2: (
        f"ALTER TABLE {JOBS} ADD COLUMN written REAL NOT NULL DEFAULT 0",
        f"UPDATE {JOBS} SET written = (julianday(updated_at) - 2440587.5) * 86400.0 "
        "WHERE updated_at IS NOT NULL",
        f"CREATE INDEX {JOBS}_written ON {JOBS} (written)",
        f"ALTER TABLE {DONE} ADD COLUMN written REAL NOT NULL DEFAULT 0",
        f"UPDATE {DONE} SET written = (julianday(at) - 2440587.5) * 86400.0",
        f"CREATE INDEX {DONE}_written ON {DONE} (written)",
    ),
    # version 2 -> 3: migration. `held` is when a migrator's export lease ends (Unix seconds;
    # NULL when no migrator holds the row); messages are looked up by job id on import.
    3: (
        f"ALTER TABLE {MESSAGES} ADD COLUMN held REAL",
        f"CREATE INDEX {MESSAGES}_id ON {MESSAGES} (id)",
    ),
}


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Bring the file at `conn` to `SCHEMA_VERSION`. Safe to race from several processes."""
    version = _version(conn)
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _version(conn)  # another process may have migrated while we waited
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the jobkit database {path} has schema version {version}, but this jobkit "
                f"reads up to version {SCHEMA_VERSION}; upgrade jobkit, or use another file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[target]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])
