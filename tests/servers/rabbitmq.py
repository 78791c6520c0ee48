"""A real rabbitmq-server on 127.0.0.1, with its own node name, ports, epmd and data directory.

Everything lives in a temporary directory (mnesia, logs, config, the Erlang cookie via HOME).
Its epmd listens on a free port of its own (``ERL_EPMD_PORT``), so a system epmd is never touched.
Stopped with ``rabbitmqctl -n NODE stop``, then by PID (the server, and the epmd we started).
`stop_broker()` / `start_broker()` simulate an outage with ``rabbitmqctl stop_app`` /
``start_app``: the AMQP port stops answering (open connections are closed), then answers again
on the same port; durable queues and persistent messages survive.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import PortTaken, free_port, listens

_SBIN = Path("/usr/lib/rabbitmq/bin")


@dataclass
class RabbitServer:
    port: int
    node: str
    process: subprocess.Popen[bytes]
    directory: Path
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def delete_queues(self, *names: str) -> None:
        """Delete the queues `names` (those that exist), whatever arguments they were declared
        with: the Celery, Dramatiq and jobkit-rabbitmq tests share this server and may use the
        same queue name with different arguments."""
        import amqp  # py-amqp (comes with kombu)

        conn = amqp.Connection(host=f"127.0.0.1:{self.port}", userid="guest", password="guest")
        conn.connect()
        try:
            channel = conn.channel()
            for name in names:
                channel.queue_delete(name)
        finally:
            conn.close()

    def queue_exists(self, name: str) -> bool:
        """Whether the queue `name` exists (a passive declare)."""
        import amqp

        conn = amqp.Connection(host=f"127.0.0.1:{self.port}", userid="guest", password="guest")
        conn.connect()
        try:
            conn.channel().queue_declare(name, passive=True)
        except amqp.exceptions.NotFound:
            return False
        finally:
            conn.close()
        return True

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(_SBIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop_broker(self) -> None:
        """Stop the RabbitMQ application (the Erlang node stays up). Blocks until the AMQP port
        refuses connections. Raises RuntimeError if rabbitmqctl fails."""
        done = self.ctl("stop_app")
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl stop_app failed: {done.stderr or done.stdout}")
        _await(lambda: not _answers(self.port), 30.0, "the AMQP port to close")

    def start_broker(self, timeout: float = 90.0) -> None:
        """Start the RabbitMQ application again; return once its AMQP port answers."""
        done = self.ctl("start_app", timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl start_app failed: {done.stderr or done.stdout}")
        _await(lambda: _answers(self.port), timeout, "the AMQP port to answer")

    def stop(self) -> None:
        """Stop the node (rabbitmqctl stop), then make sure by PID: the server and our epmd."""
        if self.process.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for pid in _epmd_pids(self.env["ERL_EPMD_PORT"]):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


def _epmd_pids(port: str) -> list[int]:
    """PIDs of epmd processes listening on `port` (ours: nobody else uses that port)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"epmd") and f"ERL_EPMD_PORT={port}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def _await(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"rabbitmq: timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            return len(sock.recv(8)) > 0
    except OSError:
        return False


def start_rabbitmq(timeout: float = 90.0) -> RabbitServer:
    """Start rabbitmq-server and wait until its AMQP port answers and the app is running (on
    other free ports, up to 3 times, if another process took the AMQP port first)."""
    tries = 3
    while True:
        tries -= 1
        try:
            return _start_rabbitmq_once(timeout)
        except PortTaken:
            if tries == 0:
                raise


def _start_rabbitmq_once(timeout: float) -> RabbitServer:
    if not (_SBIN / "rabbitmq-server").exists():
        raise RuntimeError(
            "rabbitmq-server is not installed; install it with: apt-get install -y rabbitmq-server"
        )
    directory = Path(tempfile.mkdtemp(prefix="jobkit-rabbitmq-"))
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    node = f"jobkit{uuid.uuid4().hex[:8]}@localhost"
    config = directory / "rabbitmq.conf"
    config.write_text(
        f"listeners.tcp.1 = 127.0.0.1:{port}\n"
        "loopback_users = none\n"
        "log.console = false\n"
        "log.file.level = warning\n"
    )
    (directory / "enabled_plugins").write_text("[].\n")
    # At-least-once dead-lettering (the jobkit-rabbitmq delay queues) resends a message its
    # target did not accept (a queue still recovering after a restart) only after this timeout,
    # 180 s by default; docs/adapters/rabbitmq.md asks servers for 5 s, and so do the tests.
    advanced = directory / "advanced.config"
    advanced.write_text("[{rabbit, [{dead_letter_worker_publisher_confirm_timeout, 5000}]}].\n")
    env = {
        **os.environ,
        "HOME": str(directory),
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
        "RABBITMQ_LOG_BASE": str(directory / "log"),
        "RABBITMQ_CONFIG_FILE": str(config),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(advanced),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        "RABBITMQ_SERVER_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        "RABBITMQ_CTL_DIST_PORT_MIN": str(dist_port + 0),
    }
    env.pop("RABBITMQ_CTL_DIST_PORT_MIN")
    log = open(directory / "server.out", "wb")  # noqa: SIM115 - owned by the child process
    process = subprocess.Popen(
        [str(_SBIN / "rabbitmq-server")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=directory,
        start_new_session=True,
    )
    log.close()
    server = RabbitServer(port=port, node=node, process=process, directory=directory, env=env)
    deadline = time.monotonic() + timeout
    while not _answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            output = (directory / "server.out").read_text(errors="replace")[-3000:]
            server.stop()
            raise RuntimeError(f"rabbitmq-server did not start on port {port}: {output}")
        time.sleep(0.2)
    if not listens(port, process.pid):  # its own session: the node runs in it
        server.stop()
        raise PortTaken(f"rabbitmq: port {port} was taken by another process")
    return server
