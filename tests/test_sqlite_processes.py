"""Several real OS processes on one SQLite file: exclusive leases, and recovery after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobkit.spi import Message, SqliteTransport
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CONSUMER = """
import json, os, sys, time
from datetime import timedelta
from jobkit.spi import SqliteTransport

db, go, lease, batch = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
transport = SqliteTransport(db)
while not os.path.exists(go):
    time.sleep(0.01)
while True:
    got = transport.receive(
        ["q"], max_messages=batch, wait=timedelta(seconds=0.5), lease=timedelta(seconds=lease)
    )
    if not got:
        if transport.stats(["q"])[0].ready == 0:
            break
        continue
    for d in got:
        print(json.dumps({"id": d.id, "deliveries": d.deliveries, "receipt": d.receipt}))
    sys.stdout.flush()
    transport.ack(got)
"""

HOLDER = """
import json, sys, time
from datetime import timedelta
from jobkit.spi import SqliteTransport

db, lease = sys.argv[1], float(sys.argv[2])
transport = SqliteTransport(db)
got = transport.receive(["q"], max_messages=5, wait=timedelta(seconds=10),
                        lease=timedelta(seconds=lease))
until = got[0].leased_until.timestamp() if got else 0
print(json.dumps({"ids": [d.id for d in got], "until": until}), flush=True)
time.sleep(600)
"""

SENDER = """
import sys
from jobkit.spi import Message, SqliteTransport

transport = SqliteTransport(sys.argv[1])
n = 0
while True:
    transport.send([Message(queue="q", body=b"x" * 200, id=f"{n + i}") for i in range(50)])
    n += 50
    print(n, flush=True)
"""


def _spawn(script: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "jobs.db")
    SqliteTransport(path).close()  # create the schema before the processes race to it
    return path


def test_concurrent_processes_deliver_every_message_exactly_once_while_leases_hold(
    db: str, tmp_path: Path
) -> None:
    count = 1500
    transport = SqliteTransport(db)
    transport.send([Message(queue="q", body=b"x", id=str(i)) for i in range(count)])
    go = tmp_path / "go"
    consumers = [_spawn(CONSUMER, db, go, 60, 7) for _ in range(3)]
    try:
        go.touch()
        outputs = [c.communicate(timeout=120) for c in consumers]
    finally:
        for consumer in consumers:
            _kill(consumer)
    assert [c.returncode for c in consumers] == [0, 0, 0], [err for _, err in outputs]
    seen: list[dict[str, Any]] = [
        json.loads(line) for out, _ in outputs for line in out.splitlines()
    ]
    per_process = [len(out.splitlines()) for out, _ in outputs]
    counts = Counter(d["id"] for d in seen)
    assert set(counts) == {str(i) for i in range(count)}
    assert max(counts.values()) == 1, "a message was leased twice while its lease held"
    assert {d["deliveries"] for d in seen} == {1}
    assert sum(per_process) == count, per_process
    stats = transport.stats(["q"])[0]
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)


def test_messages_of_a_killed_process_are_redelivered_after_the_lease(db: str) -> None:
    lease = 1.0
    transport = SqliteTransport(db)
    transport.send([Message(queue="q", body=f"m{i}".encode(), id=str(i)) for i in range(5)])
    holder = _spawn(HOLDER, db, lease)
    try:
        assert holder.stdout is not None
        held = json.loads(holder.stdout.readline())
    finally:
        _kill(holder)
    assert sorted(held["ids"]) == [str(i) for i in range(5)]

    early = transport.receive(["q"], max_messages=5, wait=timedelta(0), lease=timedelta(60))
    if time.time() < held["until"]:
        assert early == [], "delivered again while the dead process's lease still held"

    redelivered = list(early)

    def all_back() -> bool:
        redelivered.extend(
            transport.receive(
                ["q"], max_messages=5, wait=timedelta(seconds=0.2), lease=timedelta(60)
            )
        )
        return len(redelivered) >= 5

    wait_until(all_back, timeout=30, interval=0.0, what="the killed process's messages")
    assert sorted(d.id for d in redelivered) == [str(i) for i in range(5)]
    assert {d.deliveries for d in redelivered} == {2}


def test_sender_killed_mid_stream_leaves_a_sound_file_with_every_confirmed_message(
    db: str,
) -> None:
    sender = _spawn(SENDER, db)
    confirmed = 0
    try:
        assert sender.stdout is not None
        while confirmed < 2000:
            line = sender.stdout.readline()
            assert line, sender.stderr.read() if sender.stderr else "sender exited"
            confirmed = int(line)
    finally:
        _kill(sender)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = conn.execute("SELECT count(*) FROM jobkit_messages").fetchone()[0]
    assert stored >= confirmed
    assert stored % 50 == 0, "a batch was stored in part"
