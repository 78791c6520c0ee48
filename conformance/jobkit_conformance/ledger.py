"""The effect ledger: a SQLite file outside the broker where conformance jobs record themselves.

Every execution appends a row to ``runs`` when it starts (job id, kind, attempt, pid, start time)
and completes it when it ends (end time, outcome); long jobs update ``beat`` while they run, so
a run cut off by a kill or a time limit shows when it was last alive. Side effects go to
``effects``, one row per effect, never deduplicated: duplicates must be visible.

Safe for many processes: each call opens its own connection (WAL, generous busy timeout).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobkit_conformance.history import F, Op, OpType

ENV_VAR = "JOBKIT_CONFORMANCE_LEDGER"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    job TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker_attempt INTEGER,
    pid INTEGER NOT NULL,
    start REAL NOT NULL,
    beat REAL,
    end REAL,
    outcome TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job_id);
CREATE TABLE IF NOT EXISTS effects (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    key TEXT,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    job_id TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
"""


@dataclass(frozen=True, kw_only=True)
class RunRow:
    id: int
    job_id: str
    job: str
    attempt: int
    worker_attempt: int | None
    pid: int
    start: float
    beat: float | None
    end: float | None
    outcome: str | None
    error: str | None


# Connections by (ledger path, process, thread); see `Ledger._db`.
_OPEN: dict[tuple[str, int, int], sqlite3.Connection] = {}


class Ledger:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @staticmethod
    def from_env() -> Ledger:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise RuntimeError(
                f"{ENV_VAR} is not set: conformance jobs run only under the conformance harness"
            )
        return Ledger(path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """This process's and thread's connection to the ledger, kept open.

        A job process may be SIGSTOPped at any instant and then holds whatever ledger lock it
        had until SIGCONT. Opening and closing a connection per call made that likely: the
        close of the last connection checkpoints the WAL under an exclusive lock. A kept
        connection never does that, and without an fsync per commit (a killed process still
        loses nothing in WAL mode) a write holds the lock for microseconds.
        """
        key = (str(self.path), os.getpid(), threading.get_ident())
        conn = _OPEN.get(key)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = NORMAL")
            _OPEN[key] = conn
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # never leave a kept connection holding the lock
                conn.execute("ROLLBACK")
            raise

    def create(self) -> None:
        with self._db() as db:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)

    # -- written by the jobs ----------------------------------------------------------------

    def start(self, job_id: str, job: str, worker_attempt: int | None = None) -> tuple[int, int]:
        """Record the start of an execution; returns (row id, attempt number from 1).

        The attempt number counts earlier executions of the same job id in the ledger;
        `worker_attempt` is the worker's own count (`jobkit.current_job().attempt`), kept for
        diagnosis."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            (before,) = db.execute(
                "SELECT COUNT(*) FROM runs WHERE job_id = ?", (job_id,)
            ).fetchone()
            cur = db.execute(
                "INSERT INTO runs (job_id, job, attempt, worker_attempt, pid, start) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, job, before + 1, worker_attempt, os.getpid(), time.time()),
            )
            db.execute("COMMIT")
            row = cur.lastrowid
            assert row is not None
            return row, int(before) + 1

    def beat(self, row: int) -> None:
        with self._db() as db:
            db.execute("UPDATE runs SET beat = ? WHERE id = ?", (time.time(), row))

    def end(self, row: int, outcome: str, error: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE runs SET end = ?, outcome = ?, error = ? WHERE id = ?",
                (time.time(), outcome, error, row),
            )

    def effect(self, job_id: str, key: str | None) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO effects (job_id, key, pid, at) VALUES (?, ?, ?, ?)",
                (job_id, key, os.getpid(), time.time()),
            )

    def report(self, job_id: str) -> None:
        """A producer process notes that its enqueue of `job_id` returned (committed before
        this returns: the producer may be SIGKILLed right after)."""
        with self._db() as db:
            db.execute(
                "INSERT INTO reports (job_id, pid, at) VALUES (?, ?, ?)",
                (job_id, os.getpid(), time.time()),
            )

    # -- read by the harness ----------------------------------------------------------------

    def reports(self) -> dict[str, float]:
        """Job id -> when a producer reported its enqueue returned."""
        with self._db() as db:
            rows = db.execute("SELECT job_id, at FROM reports ORDER BY at").fetchall()
        return {str(r[0]): float(r[1]) for r in rows}

    def runs(self, job_ids: set[str] | None = None) -> list[RunRow]:
        columns = "id, job_id, job, attempt, worker_attempt, pid, start, beat, end, outcome, error"
        with self._db() as db:
            if job_ids is None:
                rows = db.execute(f"SELECT {columns} FROM runs ORDER BY start").fetchall()
            else:  # filtered in SQL: other scenarios' thousands of rows stay out
                rows = db.execute(
                    f"SELECT {columns} FROM runs WHERE job_id IN (SELECT value FROM json_each(?)) "
                    "ORDER BY start",
                    (json.dumps(sorted(job_ids)),),
                ).fetchall()
        out = [
            RunRow(
                id=r[0],
                job_id=r[1],
                job=r[2],
                attempt=r[3],
                worker_attempt=r[4],
                pid=r[5],
                start=r[6],
                beat=r[7],
                end=r[8],
                outcome=r[9],
                error=r[10],
            )
            for r in rows
        ]
        return [r for r in out if job_ids is None or r.job_id in job_ids]

    def succeeded_count(self, job: str) -> int:
        """How many distinct jobs named `job` have a successful run (cheap, for progress)."""
        with self._db() as db:
            (n,) = db.execute(
                "SELECT COUNT(DISTINCT job_id) FROM runs WHERE job = ? AND outcome = 'ok'", (job,)
            ).fetchone()
        return int(n)

    def effects(self, job_ids: set[str] | None = None) -> list[tuple[str, str | None, int, float]]:
        with self._db() as db:
            rows = db.execute("SELECT job_id, key, pid, at FROM effects ORDER BY at").fetchall()
        return [
            (str(r[0]), r[1], int(r[2]), float(r[3]))
            for r in rows
            if job_ids is None or r[0] in job_ids
        ]

    def history(self, job_ids: set[str] | None = None) -> list[Op]:
        """The ledger as history operations: RUN invoke/completion pairs and EFFECT oks."""
        ops: list[Op] = []
        for r in self.runs(job_ids):
            process = f"worker:{r.pid}"
            ops.append(
                Op(
                    process=process,
                    type=OpType.INVOKE,
                    f=F.RUN,
                    time=r.start,
                    job_id=r.job_id,
                    value={"attempt": r.attempt, "worker_attempt": r.worker_attempt, "job": r.job},
                )
            )
            if r.end is not None:
                kind = OpType.OK if r.outcome == "ok" else OpType.FAIL
                value: dict[str, object] = {"last_seen": r.end}
                if r.error:
                    value["error"] = r.error
                ops.append(
                    Op(
                        process=process,
                        type=kind,
                        f=F.RUN,
                        time=r.end,
                        job_id=r.job_id,
                        value=value,
                    )
                )
            else:
                seen = r.beat or r.start
                ops.append(
                    Op(
                        process=process,
                        type=OpType.UNKNOWN,
                        f=F.RUN,
                        time=seen,
                        job_id=r.job_id,
                        value={"last_seen": seen},
                    )
                )
        for job_id, key, pid, at in self.effects(job_ids):
            ops.append(
                Op(
                    process=f"worker:{pid}",
                    type=OpType.OK,
                    f=F.EFFECT,
                    time=at,
                    job_id=job_id,
                    value={"key": key},
                )
            )
        return ops
