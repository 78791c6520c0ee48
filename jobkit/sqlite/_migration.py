"""The SQL of `SqliteTransport`'s migration primitives (export, commit, release, import).

An export lease is a random token in ``token`` plus its end in ``held``. A ready message (or one
whose worker lease ran out) is switched to ``leased`` until ``held``, so no worker receives it;
a delayed message stays ``delayed`` with its ``due``, and the receive that would make it ready
waits for ``held`` to pass (see `SqliteTransport._lease`); a dead letter stays dead. A migrator
killed while holding rows leaves them as they were, available again when ``held`` has passed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from jobkit.records import ExportedJob
from jobkit.sqlite._schema import DEAD, DELAYED, LEASED, MESSAGES, READY
from jobkit.transport import fold_attempts

_CHUNK = 500  # ids per IN (...) list, well below SQLite's parameter limit


def export(
    conn: sqlite3.Connection,
    queues: Sequence[str],
    *,
    limit: int,
    lease: timedelta,
    include_dead: bool,
    now: float,
) -> list[ExportedJob]:
    """In a write transaction: lease up to `limit` unheld rows of `queues` for export."""
    marks = ", ".join("?" * len(queues))
    states = f"'{READY}', '{DELAYED}'" + (f", '{DEAD}'" if include_dead else "")
    until = now + lease.total_seconds()
    rows = conn.execute(
        f"UPDATE {MESSAGES} SET held = ?, token = lower(hex(randomblob(8))), "
        f"  state = CASE WHEN state IN ('{READY}', '{LEASED}') THEN '{LEASED}' ELSE state END, "
        f"  due = CASE WHEN state IN ('{READY}', '{LEASED}') THEN ? ELSE due END "
        f"WHERE seq IN (SELECT seq FROM {MESSAGES} WHERE queue IN ({marks}) "
        "  AND (held IS NULL OR held <= ?) "
        f"  AND (state IN ({states}) OR (state = '{LEASED}' AND due <= ?)) "
        "  ORDER BY seq LIMIT ?) "
        "RETURNING seq, queue, id, body, priority, "
        "  state, due, deliveries, token, dedup_key, reason",
        (until, until, *queues, now, now, limit),
    ).fetchall()
    return [_exported(row, now) for row in sorted(rows)]


def _exported(row: Any, now: float) -> ExportedJob:
    """A delayed row keeps its `due` (the remaining delay is measured from `now`); every other
    row is due. The deliveries so far are attempts used: no worker holds an exported row."""
    seq, queue, job_id, body, priority, state, due, deliveries, token, key, reason = row
    raw = bytes(body)
    delay = due - now if state == DELAYED else 0.0
    return ExportedJob(
        queue=queue,
        id=job_id,
        body=(fold_attempts(raw, deliveries) or raw) if deliveries else raw,
        delay=timedelta(seconds=max(delay, 0.0)),
        priority=priority,
        dedup_key=key,
        dead_reason=(reason or "") if state == DEAD else None,
        receipt=f"{seq}:{token}",
    )


def commit(conn: sqlite3.Connection, jobs: Sequence[ExportedJob]) -> list[str]:
    """Delete the rows still held under these receipts; the ids of rows that stay (a worker
    took them after the export lease ran out)."""
    receipts = {_receipt(job.receipt): job.id for job in jobs}
    conn.executemany(f"DELETE FROM {MESSAGES} WHERE seq = ? AND token = ?", list(receipts))
    by_seq = {seq: job_id for (seq, _), job_id in receipts.items()}
    stayed: set[int] = set()
    seqs = list(by_seq)
    for start in range(0, len(seqs), _CHUNK):
        chunk = seqs[start : start + _CHUNK]
        stayed.update(
            seq
            for (seq,) in conn.execute(
                f"SELECT seq FROM {MESSAGES} WHERE seq IN ({', '.join('?' * len(chunk))})", chunk
            )
        )
    return [by_seq[seq] for seq in sorted(stayed)]


def release(conn: sqlite3.Connection, jobs: Sequence[ExportedJob], *, now: float) -> None:
    """Undo the export lease of rows still held under these receipts."""
    conn.executemany(
        f"UPDATE {MESSAGES} SET held = NULL, token = NULL, "
        f"  state = CASE state WHEN '{LEASED}' THEN '{READY}' ELSE state END, "
        f"  due = CASE state WHEN '{LEASED}' THEN ? ELSE due END "
        "WHERE seq = ? AND token = ?",
        [(now, *_receipt(job.receipt)) for job in jobs],
    )


def _receipt(receipt: str) -> tuple[int, str]:
    seq, _, token = receipt.partition(":")
    return int(seq), token


def present(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        rows = conn.execute(
            f"SELECT DISTINCT id FROM {MESSAGES} WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
        found.update(job_id for (job_id,) in rows)
    return found


def import_rows(conn: sqlite3.Connection, jobs: Sequence[ExportedJob], *, now: float) -> set[str]:
    """In a write transaction: insert the jobs whose id has no row yet; the ids skipped."""
    skipped = present(conn, [job.id for job in jobs])
    rows = []
    stored: set[str] = set()
    for job in jobs:
        if job.id in skipped or job.id in stored:  # a second copy of one id is not sent
            skipped.add(job.id)
            continue
        stored.add(job.id)
        delay = max(job.delay.total_seconds(), 0.0)
        if job.dead:
            state, due = DEAD, now
        else:
            state, due = (DELAYED if delay > 0 else READY), now + delay
        reason = job.dead_reason
        rows.append(
            (job.queue, job.id, job.body, job.priority, state, due, job.dedup_key, now, reason)
        )
    conn.executemany(
        f"INSERT INTO {MESSAGES} (queue, id, body, priority, state, due, deliveries, dedup_key, "
        "enqueued_at, reason) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
        rows,
    )
    return skipped
