"""Stop signals, and the hold pipe that tells job processes to start nothing more.

A job process runs the jobs queued in its pipe one after the other (`--prefetch`), without
asking the supervisor: a graceful stop has to reach it before its running job ends, or it starts
the next one. Python runs a signal's handler on the main thread only, between two bytecodes, and
the supervisor's main thread can be inside one broker call for seconds (an SQS request on a slow
network, SQLite waiting out another process's lock). So the stop is split in two:

- at once, from whichever thread took the signal: the interpreter's C-level handler writes the
  signal's number to the wakeup descriptor (`signal.set_wakeup_fd`); a watcher thread reading it
  writes a byte to the `Hold` pipe, which every job process checks before each start, and wakes
  the main loop;
- when the main thread next runs Python code: the handler given to `StopSignals` (log, stop).

Written here rather than with a library: none separates "reach the job processes now" from
"run the handler on the main thread"; the watcher is 20 lines of `os.read`.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Hold:
    """One pipe that every job process of a worker watches (the read end, `r`, is passed to
    each): once it holds a byte, or its write end is closed, no job process starts another job.
    Nobody reads it, so a hold is permanent. `hold` is idempotent, thread-safe and never
    blocks."""

    def __init__(self) -> None:
        self.r, self._w = os.pipe()
        os.set_blocking(self._w, False)
        # re-entrant: `hold` runs in the main thread's signal handler too, which may interrupt
        # a `hold` of that same thread
        self._lock = threading.RLock()
        self._closed = self._held = False

    def hold(self) -> None:
        with self._lock:
            if not self._closed and not self._held:
                os.write(self._w, b"h")
                self._held = True

    def close(self) -> None:
        """Close both ends. Job processes still running see end of file: held."""
        with self._lock:
            if not self._closed:
                self._closed = True
                os.close(self._w)
                os.close(self.r)


class StopSignals:
    """SIGTERM and SIGINT for one worker: each holds `hold` and calls `wake` at once (from the
    watcher thread), then `handler(signum)` on the main thread. `install` and `restore` must be
    called on the main thread (elsewhere they do nothing: signals go to the main thread's
    worker); `restore` puts back the handlers and wakeup descriptor found by `install`."""

    def __init__(self, handler: Callable[[int], None], hold: Hold, wake: Callable[[], None]):
        self._handler = handler
        self._hold = hold
        self._wake = wake
        self._previous: dict[int, object] = {}
        self._previous_fd: int | None = None
        self._pipe: tuple[int, int] | None = None
        self._watcher: threading.Thread | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        r, w = os.pipe()
        os.set_blocking(w, False)  # required by set_wakeup_fd
        self._pipe = (r, w)
        self._watcher = threading.Thread(target=self._watch, name="jobkit-signals", daemon=True)
        self._watcher.start()
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        self._previous_fd = signal.set_wakeup_fd(w, warn_on_full_buffer=False)

    def restore(self) -> None:
        if self._pipe is None:
            return
        signal.set_wakeup_fd(-1 if self._previous_fd is None else self._previous_fd)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        r, w = self._pipe
        os.close(w)  # the watcher reads end of file and returns
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        os.close(r)
        self._pipe = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._handler(signum)

    def _watch(self) -> None:
        assert self._pipe is not None
        r = self._pipe[0]
        while data := os.read(r, 64):
            if any(b in STOP_SIGNALS for b in data):
                self._hold.hold()
                self._wake()
