"""A job that ignores its soft time limit, so only Celery's hard limit (SIGKILL) stops it."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta

from jobkit import App, RetryPolicy

app = App("stubborn")


@app.job(
    queue="work",
    retry=RetryPolicy(max_attempts=2, backoff_base=timedelta(0)),
    time_limit=timedelta(seconds=0.5),
)
def stubborn(key: str) -> None:
    db = sqlite3.connect(os.environ["JOBKIT_TEST_LEDGER"], timeout=30)
    with db:
        db.execute("INSERT INTO runs VALUES (?, NULL, 0, ?, ?)", (key, os.getpid(), time.time()))
    db.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.1)
        except BaseException:
            pass
