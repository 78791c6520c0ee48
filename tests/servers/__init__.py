"""Real broker servers for the tests, started on 127.0.0.1 on free ports and stopped by PID.

Each module here starts one kind of server as a subprocess we own. Under CI=true a server that
cannot be started fails the test session; locally the tests that need it are reported as errors
with the reason (never skipped silently).

Outage tests: every server object has ``stop_broker()`` and ``start_broker()``. Between the two
the broker refuses connections (and the ones open were cut); after ``start_broker()`` it answers
on the same port with the same data (durable messages kept). Neither call removes the scratch
directory; ``stop()`` ends everything for good. How each kind does it:

- redis: the server process is stopped (SIGTERM) and started again with the same command line;
  it runs with an append-only file in its directory, flushed at a SIGTERM, so nothing is lost.
- rabbitmq: ``rabbitmqctl stop_app`` / ``start_app`` (the Erlang node stays up, the AMQP
  listener goes away and comes back; durable queues and persistent messages survive).
- moto: its server keeps its state in memory only, so it cannot be restarted without losing
  every queue. The outage is simulated instead by a loopback TCP proxy in front of it
  (``tests.servers.proxy.TcpProxy``): the proxy closes its listener and cuts open connections,
  then listens again on the same port.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now, chosen outside the kernel's ephemeral
    range. A server that is stopped and started again (or a proxy that is cut and resumed) must
    bind the same port again; a port from the ephemeral range may meanwhile be the local end of
    some client's outgoing connection (or its TIME_WAIT), and the bind fails. That happened in
    CI: a moto proxy could not listen again and every later SQS test of that process failed."""
    low, high = _ephemeral_range()
    candidates = range(20000, low) if low > 21000 else range(high + 1, 65536)
    rng = random.Random()
    for _ in range(200):
        port = rng.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on 127.0.0.1 in {candidates.start}-{candidates.stop - 1}")


def listens(port: int, owner: int) -> bool:
    """Whether a socket listening on `port` belongs to process `owner` or to a
    process of the session `owner` leads (Linux /proc). A server started on a `free_port` that
    another process took in between fails to bind, while that other process answers on the
    port: this tells the two apart."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[1].endswith(f":{port:04X}"):  # LISTEN, any address
                inodes.add(f"socket:[{fields[9]}]")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if pid != owner and os.getsid(pid) != owner:
                continue
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return True
        except OSError:
            continue
    return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@dataclass
class ServerProcess:
    """A server we started: its port, its process and its scratch directory.

    `argv` and `answers` (kept by `launch`) let `start_broker` start it again in place."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path
    argv: list[str] = field(default_factory=list, repr=False)
    answers: Callable[[int], bool] | None = field(default=None, repr=False)

    def stop_broker(self) -> None:
        """Stop the server process (SIGTERM, then SIGKILL), keeping its directory and data.
        Blocks until it has exited. Idempotent."""
        _end(self.process)

    def start_broker(self, timeout: float = 30.0) -> None:
        """Start the server again, same command line, same port, same directory; return once
        it answers. Raises RuntimeError if it does not. Idempotent while it runs."""
        if self.process.poll() is None:
            return
        if not self.argv or self.answers is None:
            raise RuntimeError("this server was not started by launch(): cannot restart it")
        self.process = _spawn(self.argv, self.directory)
        _await(self.port, self.process, self.directory, self.answers, timeout)

    def stop(self) -> None:
        """Stop the server by PID (SIGTERM, then SIGKILL) and remove its directory."""
        _end(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _spawn(argv: list[str], directory: Path) -> subprocess.Popen[bytes]:
    with (directory / "server.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=directory)


def _await(
    port: int,
    process: subprocess.Popen[bytes],
    directory: Path,
    answers: Callable[[int], bool],
    timeout: float,
) -> None:
    deadline = time.monotonic() + timeout
    while not answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (directory / "server.log").read_text(errors="replace")[-2000:]
            _end(process)
            raise RuntimeError(f"{directory.name} did not start on port {port}: {output}")
        time.sleep(0.05)
    if not listens(port, process.pid):
        _end(process)
        raise PortTaken(f"{directory.name}: port {port} was taken by another process")


class PortTaken(RuntimeError):
    """The free port chosen for a server was taken by another process before it could bind."""


def launch(
    name: str,
    argv: Callable[[int, Path], list[str]],
    answers: Callable[[int], bool],
    *,
    timeout: float,
) -> ServerProcess:
    """Start `argv(port, directory)` on a free port with its log (server.log) in a fresh
    directory, and wait until `answers(port)` from that process (another free port, up to 3
    times, if another process took the port first). Raises RuntimeError with the log's tail if
    it exits or times out (and removes the directory)."""
    tries = 3
    while True:
        tries -= 1
        try:
            return _launch_once(name, argv, answers, timeout=timeout)
        except PortTaken:
            if tries == 0:
                raise


def _launch_once(
    name: str,
    argv: Callable[[int, Path], list[str]],
    answers: Callable[[int], bool],
    *,
    timeout: float,
) -> ServerProcess:
    directory = Path(tempfile.mkdtemp(prefix=f"jobkit-{name}-"))
    port = free_port()
    command = argv(port, directory)
    process = _spawn(command, directory)
    try:
        _await(port, process, directory, answers, timeout)
    except RuntimeError:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return ServerProcess(
        port=port, process=process, directory=directory, argv=command, answers=answers
    )
