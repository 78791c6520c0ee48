"""`SqliteJobStore`: job outcomes and completed idempotency keys, in the transport's file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from jobkit.clock import Clock, SystemClock
from jobkit.errors import SerializationError
from jobkit.records import AttemptError, JobRecord, JobState
from jobkit.retention import Retention
from jobkit.sqlite._db import DEFAULT_BUSY_TIMEOUT, Handle
from jobkit.sqlite._schema import DONE, JOBS
from jobkit.store import EventKind, JobEvent, JobStore, apply_event, dedup_key

_CHUNK = 500  # bound the number of SQL variables per statement
PRUNE_BATCH = 1000  # expired rows deleted per table per prune


class SqliteJobStore(JobStore):
    """Job records in ``jobkit_jobs`` and done keys in ``jobkit_done``.

    Rows expire as `retention` says (measured on `clock`): expired rows are invisible to `get`
    and `done` at once, and `record` deletes them at most every `Retention.prune_every`, at most
    `PRUNE_BATCH` rows per table per write (through an index, never a scan), so pruning adds a
    bounded cost to a few writes.

    Thread-safe (one connection behind a lock; a forked child reopens the file). `record` writes
    a whole batch in one transaction. Durability as for `SqliteTransport` with the same
    `synchronous` setting.
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "normal",
        busy_timeout: timedelta = DEFAULT_BUSY_TIMEOUT,
        retention: Retention | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.path = path
        self.retention = retention or Retention()
        self._clock: Clock = clock or SystemClock()
        self._db = Handle(path, synchronous=synchronous, busy_timeout=busy_timeout)
        self._next_prune = 0.0  # Unix seconds; prune on the first write

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def record(self, events: Sequence[JobEvent]) -> None:
        if not events:
            return
        ids = list(dict.fromkeys(event.job_id for event in events))
        done_rows: list[tuple[str, str, str, float]] = []
        now = self._now()
        with self._db.write("record job events") as conn:
            if now >= self._next_prune:
                self._prune(conn, now)
            records: dict[str, JobRecord | None] = dict.fromkeys(ids)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                for row in conn.execute(
                    f"SELECT id, job, state, attempts, errors, result, idempotency_key, "
                    f"updated_at FROM {JOBS} WHERE id IN ({', '.join('?' * len(chunk))})",
                    chunk,
                ):
                    records[row[0]] = _from_row(row)
            for event in events:
                records[event.job_id] = apply_event(records[event.job_id], event)
                if event.kind is EventKind.SUCCEEDED:
                    done_rows.append(
                        (
                            dedup_key(event.job_id, event.key),
                            event.job_id,
                            event.at.isoformat(),
                            now,
                        )
                    )
            conn.executemany(
                f"INSERT OR REPLACE INTO {JOBS} (id, job, state, attempts, errors, result, "
                "idempotency_key, updated_at, written) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*_to_row(record), now) for record in records.values() if record is not None],
            )
            conn.executemany(
                f"INSERT OR REPLACE INTO {DONE} (key, job_id, at, written) VALUES (?, ?, ?, ?)",
                done_rows,
            )

    def _prune(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete up to `PRUNE_BATCH` expired rows per table; come back soon if there were more."""
        full = False
        for table, key, ttl in (
            (JOBS, "id", self.retention.records),
            (DONE, "key", self.retention.keys),
        ):
            deleted = conn.execute(
                f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} "
                "WHERE written < ? ORDER BY written LIMIT ?)",
                (now - ttl.total_seconds(), PRUNE_BATCH),
            ).rowcount
            full = full or deleted >= PRUNE_BATCH
        self._next_prune = now + (0 if full else self.retention.prune_every.total_seconds())

    def get(self, job_id: str) -> JobRecord | None:
        with self._db.read("read a job record") as conn:
            row = conn.execute(
                f"SELECT id, job, state, attempts, errors, result, idempotency_key, updated_at "
                f"FROM {JOBS} WHERE id = ? AND written >= ?",
                (job_id, self._now() - self.retention.records.total_seconds()),
            ).fetchone()
        return None if row is None else _from_row(row)

    def done(self, keys: Sequence[str]) -> set[str]:
        unique = list(dict.fromkeys(keys))
        found: set[str] = set()
        cutoff = self._now() - self.retention.keys.total_seconds()
        with self._db.read("look up done keys") as conn:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                found.update(
                    row[0]
                    for row in conn.execute(
                        f"SELECT key FROM {DONE} WHERE written >= ? "
                        f"AND key IN ({', '.join('?' * len(chunk))})",
                        (cutoff, *chunk),
                    )
                )
        return found

    def close(self) -> None:
        self._db.close()


def _to_row(record: JobRecord) -> tuple[Any, ...]:
    try:
        result = json.dumps(record.result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"job {record.job!r} ({record.id}): its result ({type(record.result).__name__}) "
            f"is not JSON: {exc}; return ids, strings, numbers, lists or dicts"
        ) from exc
    errors = json.dumps(
        [{"attempt": e.attempt, "error": e.error, "at": e.at.isoformat()} for e in record.errors]
    )
    return (
        record.id,
        record.job,
        record.state.value,
        record.attempts,
        errors,
        result,
        record.idempotency_key,
        record.updated_at.isoformat() if record.updated_at else None,
    )


def _from_row(row: tuple[Any, ...]) -> JobRecord:
    job_id, job, state, attempts, errors, result, key, updated_at = row
    return JobRecord(
        id=job_id,
        job=job,
        state=JobState(state),
        attempts=attempts,
        errors=tuple(
            AttemptError(attempt=e["attempt"], error=e["error"], at=datetime.fromisoformat(e["at"]))
            for e in json.loads(errors)
        ),
        result=json.loads(result),
        idempotency_key=key,
        updated_at=datetime.fromisoformat(updated_at) if updated_at else None,
    )
