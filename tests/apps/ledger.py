"""A test app whose jobs record every run and every effect in a SQLite ledger outside the broker.

The ledger path comes from JOBKIT_TEST_LEDGER, read when a job runs.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from datetime import timedelta

from jobkit import App, Reject, RetryPolicy, current_job

app = App("ledger")

FAST = RetryPolicy(max_attempts=5, backoff_base=timedelta(seconds=0.05), jitter=0.5)
GROWING = RetryPolicy(max_attempts=4, backoff_base=timedelta(seconds=0.2), jitter=0.0)


def connect(path: str | None = None) -> sqlite3.Connection:
    db = sqlite3.connect(path or os.environ["JOBKIT_TEST_LEDGER"], timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS runs (key TEXT, job_id TEXT, attempt INT, pid INT, at REAL);
        CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, at REAL);
        """
    )
    return db


def _run(key: str) -> sqlite3.Connection:
    ctx = current_job()
    db = connect()
    with db:
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
            (key, ctx.id if ctx else None, ctx.attempt if ctx else 0, os.getpid(), time.time()),
        )
    return db


def _record(key: str, sleep: float) -> str:
    db = _run(key)
    if sleep:
        time.sleep(sleep)
    with db:
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, time.time()))
    return key


@app.job(queue="work", retry=FAST)
def record(key: str, sleep: float = 0.0) -> str:
    """Run, maybe sleep, then apply the effect once per key (an idempotent write)."""
    return _record(key, sleep)


@app.job(queue="work", retry=GROWING)
def always_fails(key: str) -> None:
    _run(key)
    raise ConnectionError("downstream unavailable")


@app.job(queue="work", retry=GROWING)
def permanent(key: str) -> None:
    _run(key)
    raise Reject("this input can never work")


@app.job(
    queue="work",
    retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)),
    time_limit=timedelta(seconds=0.5),
)
def hang(key: str, seconds: float) -> str:
    _run(key)
    time.sleep(seconds)
    return key


@app.job(queue="work", retry=RetryPolicy(max_attempts=1), time_limit=timedelta(seconds=0.5))
def stubborn(key: str, seconds: float) -> str:
    """Runs `seconds` whatever is raised in it: only a hard time limit (the process stopped)
    ends it before. Applies its effect if it ran to the end."""
    db = _run(key)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            time.sleep(0.05)
        except BaseException:  # the point: a job that swallows what stops it
            pass
    with db:
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, time.time()))
    return key


@app.job(queue="work", retry=FAST)
def echo(key: str, payload: str) -> str:
    """Apply the effect once per key and return `payload` (big payloads both ways)."""
    db = _run(key)
    with db:
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, time.time()))
    return payload


@app.job(queue="work", retry=FAST)
def leave_grandchild(key: str) -> str:
    """First attempt: start a long-lived program that inherits every inheritable descriptor
    (close_fds=False), then wait to be killed. Later attempts apply the effect."""
    db = _run(key)
    ctx = current_job()
    if ctx is not None and ctx.attempt == 1:
        subprocess.Popen(["sleep", "60"], close_fds=False)
        time.sleep(60)
    with db:
        db.execute("INSERT OR IGNORE INTO effects VALUES (?, ?)", (key, time.time()))
    return key


@app.job(queue="work", retry=FAST)
def what_programs_inherit(key: str) -> dict[str, str]:
    """What a program started by a job (close_fds=False) gets: its open descriptors and its
    ignored and caught signal masks (from /proc)."""
    _run(key)
    script = (
        "import os; fds = sorted(os.listdir('/proc/self/fd'));"
        "s = dict(l.split(':\\t') for l in open('/proc/self/status').read().splitlines()"
        " if l.startswith(('SigIgn', 'SigCgt')));"
        "print(' '.join(fds)); print(s['SigIgn'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], close_fds=False, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return {"fds": out[0], "sig_ign": out[1]}


def rows(path: str | os.PathLike[str], sql: str, *params: object) -> list[tuple[object, ...]]:
    """Read the ledger (from a test process), bypassing the app."""
    db = sqlite3.connect(path, timeout=30)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def count(path: str | os.PathLike[str], sql: str, *params: object) -> int:
    value = rows(path, sql, *params)[0][0]
    assert isinstance(value, int)
    return value


@app.job(queue="work", retry=RetryPolicy(max_attempts=1))
def once(key: str, sleep: float = 0.0) -> str:
    """`record` with a single attempt: a second delivery of a job that never ran would be
    dead-lettered if the worker counted it."""
    return _record(key, sleep)
