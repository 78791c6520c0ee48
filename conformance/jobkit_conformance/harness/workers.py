"""Worker processes started by the suite, and the faults injected into them.

A `ProcessWorker` is ``python -m jobkit.cli.main worker ...`` in a session (and process group)
of its own, so a SIGKILL of the group kills the worker and its job processes and nothing else.
An `InProcessWorker` runs `jobkit.worker.supervisor.Worker` in a thread of the harness: for
backends that are not shared across processes (``memory://``); its job processes are still real
processes, and "kill" SIGKILLs them and abandons the supervisor.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from jobkit import App
from jobkit.spi import Backend, TransportBackend, WorkerOptions
from jobkit_conformance.ledger import ENV_VAR

APP_PATH = "jobkit_conformance.jobs:app"
POLL = timedelta(seconds=0.2)
"""The workers' poll interval (``--poll``): part of every lateness and recovery bound."""


class WorkerHandle(ABC):
    name: str

    @property
    @abstractmethod
    def pid(self) -> int: ...

    @abstractmethod
    def alive(self) -> bool: ...

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the worker and its job processes (a crash)."""

    @abstractmethod
    def term(self) -> None:
        """SIGTERM the worker (graceful shutdown)."""

    @abstractmethod
    def stop(self) -> None:
        """SIGSTOP the worker and its job processes."""

    @abstractmethod
    def cont(self) -> None:
        """SIGCONT what `stop` stopped."""

    @abstractmethod
    def wait(self, timeout: float) -> int | None:
        """Wait for the worker to exit; its exit code, or None if still running."""

    def close(self) -> None:
        """Make sure nothing of the worker is left running."""
        if self.alive():
            with contextlib.suppress(Exception):
                self.kill()
        self.wait(10)


class ProcessWorker(WorkerHandle):
    def __init__(
        self,
        *,
        name: str,
        backend_url: str,
        queues: Sequence[str],
        concurrency: int,
        lease: timedelta,
        grace: timedelta,
        ledger: Path,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        prefetch: int = 1,
        unknown_job_timeout: float | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path
        cmd = [
            sys.executable,
            "-m",
            "jobkit.cli.main",
            "--app",
            APP_PATH,
            "--backend",
            backend_url,
            "worker",
            "-c",
            str(concurrency),
            "--lease",
            f"{lease.total_seconds():g}",
            "--grace",
            f"{grace.total_seconds():g}",
            "--poll",
            f"{POLL.total_seconds():g}",
            "--prefetch",
            str(prefetch),
        ]
        if unknown_job_timeout is not None:
            cmd += ["--unknown-job-timeout", f"{unknown_job_timeout:g}"]
        for q in queues:
            cmd += ["-q", q]
        env = dict(os.environ)
        env[ENV_VAR] = str(ledger)
        env.update(extra_env or {})
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        self._group(signal.SIGKILL)

    def term(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        self._group(signal.SIGSTOP)

    def cont(self) -> None:
        self._group(signal.SIGCONT)

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        self._log.close()
        return code

    def close(self) -> None:
        self.cont()
        super().close()
        # job processes left behind by a graceful exit gone wrong share the group
        self._group(signal.SIGKILL)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class InProcessWorker(WorkerHandle):
    """A supervisor thread in this process (see the module docstring)."""

    def __init__(
        self,
        *,
        name: str,
        app: App,
        backend: Backend,
        queues: Sequence[str],
        concurrency: int,
        lease: timedelta,
        grace: timedelta,
        prefetch: int = 1,
        unknown_job_timeout: float | None = None,
    ) -> None:
        from jobkit.spi import Worker

        if not isinstance(backend, TransportBackend):
            raise TypeError("in-process workers need a TransportBackend")
        self.name = name
        options = WorkerOptions(
            app_path=APP_PATH,
            queues=tuple(queues),
            concurrency=concurrency,
            lease=lease,
            grace=grace,
            poll=POLL,
            prefetch=prefetch,
            **_unknown_job_option(unknown_job_timeout),
        )
        self.worker: Any = Worker(app, backend, options)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"worker-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # reported by the scenario
            self.error = exc

    def _children(self) -> list[int]:
        pids: list[int] = []
        for proc in getattr(self.worker, "_procs", []):
            popen = getattr(proc, "proc", None)
            if popen is not None and popen.poll() is None:
                pids.append(popen.pid)
        return pids

    @property
    def pid(self) -> int:
        return os.getpid()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _signal_children(self, sig: int) -> None:
        for pid in self._children():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def kill(self) -> None:
        self._signal_children(signal.SIGKILL)
        self.worker.stop(immediate=True)

    def term(self) -> None:
        self.worker.stop()

    def stop(self) -> None:
        self._signal_children(signal.SIGSTOP)

    def cont(self) -> None:
        self._signal_children(signal.SIGCONT)

    def wait(self, timeout: float) -> int | None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            return None
        return 0 if self.error is None else 1

    def close(self) -> None:
        self.cont()
        if self.alive():
            self.worker.stop(immediate=True)
        self.wait(15)


def _unknown_job_option(seconds: float | None) -> dict[str, Any]:
    """WorkerOptions' keyword for how long an unknown job or envelope version waits for a
    worker that knows it before it is dead-lettered."""
    return {} if seconds is None else {"unknown_job_timeout": timedelta(seconds=seconds)}


def wait_for(condition: Any, *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition` until it is truthy or `timeout` s pass; True if it came true."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
