"""Job processes as the supervisor sees them: start, submit, read outcomes, kill.

Not thread-safe: only the supervisor's main thread touches a `JobProcess`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from jobkit.envelope import Envelope
from jobkit.records import Delivery
from jobkit.worker._outcome import Outcome


@dataclass(kw_only=True)
class Running:
    """One delivery handed to a job process."""

    delivery: Delivery
    envelope: Envelope
    attempt: int
    deadline: float | None = None  # monotonic; set when the job starts
    started: float | None = None
    lease_until: float = 0.0  # monotonic; when our lease on the message ends


@dataclass(kw_only=True)
class JobProcess:
    app_path: str
    proc: subprocess.Popen[bytes] | None = None
    inbox: Connection | None = None  # we write
    outbox: Connection | None = None  # we read
    ready: bool = False
    jobs: deque[Running] = field(default_factory=deque)
    hold_w: int | None = None  # write end of the hold pipe: a byte there = start no more jobs

    def start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        hold_r, self.hold_w = os.pipe()
        env = dict(os.environ)
        paths = [p for p in sys.path if p and os.path.isdir(p)]
        env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), *paths])
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jobkit.worker._child",
                self.app_path,
                str(to_child_r),
                str(from_child_w),
                str(os.getpid()),
                str(hold_r),
            ],
            pass_fds=(to_child_r, from_child_w, hold_r),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        os.close(hold_r)
        self.inbox = Connection(to_child_w, readable=False)
        self.outbox = Connection(from_child_r, writable=False)
        self.ready = False
        self.jobs.clear()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    @property
    def idle(self) -> bool:
        return self.ready and not self.jobs

    def submit(self, job: Running, now: float) -> None:
        assert self.inbox is not None
        if not self.jobs:
            self._start_clock(job, now)
        self.jobs.append(job)
        self.inbox.send_bytes(b"%d\n" % job.attempt + job.delivery.body)

    def read(self, now: float) -> Outcome | None:
        """Read one frame. Returns the outcome of the head job, or None for the ready frame.

        Raises EOFError if the process died.
        """
        assert self.outbox is not None
        frame = self.outbox.recv_bytes()
        if frame == b"ready":
            self.ready = True
            return None
        data = json.loads(frame)
        return Outcome(
            ok=bool(data["ok"]),
            result=data.get("result"),
            error=data.get("error"),
            transient=bool(data.get("transient", True)),
            retry_delay=data.get("retry_delay"),
            not_started=bool(data.get("not_started", False)),
        )

    def hold(self) -> None:
        """Tell the process to start no more jobs: each job already sent to it and not yet
        started comes back as an outcome with `not_started` (in order, as usual). The job it
        is running finishes. Permanent for this process; idempotent; never blocks."""
        if self.hold_w is not None:
            with contextlib.suppress(OSError):
                os.write(self.hold_w, b"h")
            os.close(self.hold_w)
            self.hold_w = None

    def finish_head(self, now: float) -> Running:
        done = self.jobs.popleft()
        if self.jobs:
            self._start_clock(self.jobs[0], now)
        return done

    @staticmethod
    def _start_clock(job: Running, now: float) -> None:
        job.started = now
        if job.envelope.time_limit is not None:
            job.deadline = now + job.envelope.time_limit

    def kill(self) -> list[Running]:
        """SIGKILL the process and reap it. Returns the jobs it held (head first)."""
        held = list(self.jobs)
        self.jobs.clear()
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.reap()
        return held

    def reap(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        for conn in (self.inbox, self.outbox):
            if conn is not None:
                conn.close()
        self.inbox = self.outbox = None
        self.ready = False
        if self.hold_w is not None:
            os.close(self.hold_w)
            self.hold_w = None

    def close(self, timeout: float = 5.0) -> None:
        """Ask an idle process to exit (EOF on its inbox), kill it after `timeout`."""
        if self.inbox is not None:
            self.inbox.close()
            self.inbox = None
        if self.proc is not None:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        self.kill()
