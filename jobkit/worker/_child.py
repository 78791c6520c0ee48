"""A job process: reads frames (attempt, envelope) from a pipe, runs each job, reports outcomes.

Started by the supervisor as
``python -m jobkit.worker._child APP READ_FD WRITE_FD PARENT_PID HOLD_FD``. Before starting each
job it looks at HOLD_FD: once the supervisor has written there (graceful shutdown), every job
still in the pipe is answered "not started" instead of run.

SIGINT and SIGTERM (a Ctrl-C reaches the whole process group) do nothing here: the supervisor
decides when jobs stop. They are caught by a Python handler that does nothing, not ignored
(SIG_IGN), because an ignored signal stays ignored in the programs a job starts; a handler is
reset to the default at exec. The pipes are not inherited by those programs either. It dies
with its parent (PR_SET_PDEATHSIG), so a SIGKILLed worker leaves no orphan running a job.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import sys
from types import FrameType

from jobkit.envelope import decode
from jobkit.errors import SerializationError
from jobkit.loading import load_app
from jobkit.worker._execute import run
from jobkit.worker._frames import read_frame, write_frame
from jobkit.worker._observe import configure_child_logging, worker_hooks
from jobkit.worker._outcome import Outcome
from jobkit.worker._outcome import encode as encode_outcome

_PR_SET_PDEATHSIG = 1

_NOT_STARTED = encode_outcome(
    Outcome(ok=False, error="not started: the worker is stopping", not_started=True)
)


def _die_with_parent(parent_pid: int) -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: fall back to the check below only
        pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGINT / SIGTERM: the supervisor decides when jobs stop (see the module docstring)."""


def _held(hold_fd: int) -> bool:
    """Whether the supervisor asked this process to start no more jobs (a byte, or EOF)."""
    readable, _, _ = select.select([hold_fd], [], [], 0)
    return bool(readable)


def main(argv: list[str]) -> int:
    app_path, read_fd, write_fd, parent_pid = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    hold_fd = int(argv[4])
    signal.signal(signal.SIGINT, _ignore)
    signal.signal(signal.SIGTERM, _ignore)
    for fd in (read_fd, write_fd, hold_fd):
        os.set_inheritable(fd, False)  # not passed on to what a job starts
    _die_with_parent(parent_pid)
    configure_child_logging()
    app = load_app(app_path)
    hooks = worker_hooks(app)
    write_frame(write_fd, b"ready")
    while True:
        frame = read_frame(read_fd)
        if frame is None:
            return 0
        if _held(hold_fd):  # checked just before each start: shutdown starts nothing new
            write_frame(write_fd, _NOT_STARTED)
            continue
        head, _, body = frame.partition(b"\n")
        try:
            outcome = run(app, decode(body), int(head), hooks)
        except SerializationError as exc:  # the supervisor decodes first; belt and braces
            outcome = Outcome(ok=False, transient=False, error=str(exc))
        write_frame(write_fd, encode_outcome(outcome))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
