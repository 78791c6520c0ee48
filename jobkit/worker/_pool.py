"""Job processes as the supervisor sees them: start, submit, read outcomes, retire, kill.

Each job process gets two pipes of its own (frames: `_frames`), the read end of the worker's
hold pipe (`_signals.Hold`), and nothing else of the supervisor's (every other descriptor is
closed at exec). The supervisor never blocks on them: frames it cannot write
yet wait in a per-process buffer, frames it reads are assembled as they come. A process's exit
is seen through a pidfd (`os.pidfd_open`), not only through its pipe's end of file: a job that
forked, or started a subprocess that inherited the pipe, and was then killed is still seen dead.

After `max_jobs` jobs a process takes no more; once they are done it is retired (its inbox is
closed, it exits) and the supervisor starts a fresh one.

Not thread-safe: only the supervisor's main thread touches a `JobProcess`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field

from jobkit.envelope import Envelope
from jobkit.records import Delivery
from jobkit.worker._frames import Incoming, Outgoing
from jobkit.worker._outcome import Outcome
from jobkit.worker._outcome import decode as decode_outcome


@dataclass(kw_only=True)
class Running:
    """One delivery handed to a job process."""

    delivery: Delivery
    envelope: Envelope
    attempt: int
    deadline: float | None = None  # monotonic; set when the job starts
    started: float | None = None
    lease_until: float = 0.0  # monotonic; when our lease on the message ends

    def lapsed(self, now: float) -> bool:
        """Whether the broker's lease on this delivery has run out by `now` (monotonic): only
        for timed leases (`Delivery.leased_until` set); a lease held until the delivery is
        settled never lapses. Once lapsed, the broker may have handed the message to another
        consumer, and this copy must not start."""
        return self.delivery.leased_until is not None and self.lease_until <= now


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux >= 5.3: exits are polled instead
        return None


@dataclass(kw_only=True)
class JobProcess:
    app_path: str
    max_jobs: int | None = None  # jobs per process before it is replaced
    proc: subprocess.Popen[bytes] | None = None
    inbox: Outgoing | None = None  # we write
    outbox: Incoming | None = None  # we read
    pidfd: int | None = None  # readable once the process has exited
    up: bool = False  # the process said it is ready
    retiring: bool = False  # its inbox is closed: it exits when its jobs are done
    handed: int = 0  # jobs handed to this process
    jobs: deque[Running] = field(default_factory=deque)
    hold_r: int  # read end of the worker's `_signals.Hold` pipe: a byte there = start no more

    def start(self) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
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
                str(self.hold_r),
            ],
            pass_fds=(to_child_r, from_child_w, self.hold_r),  # and 0-2: every other fd is closed
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        os.set_blocking(to_child_w, False)
        os.set_blocking(from_child_r, False)
        self.inbox = Outgoing(to_child_w)
        self.outbox = Incoming(from_child_r)
        self.pidfd = _pidfd(self.proc.pid)
        self.up = self.retiring = False
        self.handed = 0
        self.jobs.clear()

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    @property
    def ready(self) -> bool:
        """Up, and takes more jobs."""
        return (
            self.up and not self.retiring and (self.max_jobs is None or self.handed < self.max_jobs)
        )

    @property
    def idle(self) -> bool:
        return self.ready and not self.jobs

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def submit(self, job: Running, now: float) -> None:
        """Queue the job's frame for the process (written as the pipe takes it)."""
        assert self.inbox is not None
        if not self.jobs:
            self._start_clock(job, now)
        self.jobs.append(job)
        self.handed += 1
        with contextlib.suppress(OSError):  # a dead process is seen through its pidfd / EOF
            self.inbox.add(b"%d\n" % job.attempt + job.delivery.body)

    def flush(self) -> None:
        """Write what waits for the process, as far as its pipe takes it now."""
        if self.inbox is not None:
            with contextlib.suppress(OSError):
                self.inbox.flush()

    @property
    def wants_write(self) -> bool:
        return self.inbox is not None and bool(self.inbox)

    def read(self) -> tuple[list[Outcome | None], bool]:
        """Read what the process wrote so far: its outcomes in order (None for the ready
        frame), and whether its pipe has ended. Never blocks."""
        assert self.outbox is not None
        frames = self.outbox.read()
        outcomes: list[Outcome | None] = []
        for frame in frames:
            if frame == b"ready":
                self.up = True
                outcomes.append(None)
                continue
            outcomes.append(decode_outcome(frame))
        return outcomes, self.outbox.eof

    def finish_head(self, now: float) -> Running:
        done = self.jobs.popleft()
        if self.jobs:
            self._start_clock(self.jobs[0], now)
        return done

    @property
    def used_up(self) -> bool:
        """Has run its `max_jobs`: retire it."""
        return self.max_jobs is not None and self.handed >= self.max_jobs and not self.jobs

    def retire(self) -> None:
        """Close the process's inbox: it exits after its jobs (none, when called)."""
        if self.inbox is not None:
            os.close(self.inbox.fd)
            self.inbox = None
        self.retiring = True

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
        for fd in (
            self.inbox.fd if self.inbox else None,
            self.outbox.fd if self.outbox else None,
            self.pidfd,
        ):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.inbox = self.outbox = None
        self.pidfd = None
        self.up = False

    def close(self, timeout: float = 5.0) -> None:
        """Ask an idle process to exit (EOF on its inbox), kill it after `timeout`."""
        if self.inbox is not None:
            self.retire()
        if self.proc is not None:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        self.kill()
