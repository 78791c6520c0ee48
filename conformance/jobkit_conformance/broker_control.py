"""Broker control: how the harness stops and starts the broker under test, when the user can.

The suite cannot know how a broker is run (a systemd unit, a container, a managed service), so
the user supplies the control: a command called as ``CMD stop`` and ``CMD start``
(``--broker-control CMD``, ``broker_control = "CMD"`` in the config file, or a
`pytest_jobkit_broker_control` hook in pytest). ``stop`` returns once the broker no longer
accepts connections; ``start`` once it accepts them again. Without a control, the checks that
need one are reported as not run, never as passed.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Protocol

from jobkit import ConfigurationError, JobkitError


class BrokerControlFailed(JobkitError):
    """The user-supplied broker control did not do what it was asked."""


class BrokerControl(Protocol):
    """Stops and starts the broker. Both block until done; neither is called concurrently."""

    def stop(self) -> None:
        """Stop the broker; return once it refuses connections."""
        ...

    def start(self) -> None:
        """Start the broker with its data as it was at `stop`; return once it answers."""
        ...


class CommandBrokerControl:
    """Runs ``CMD stop`` / ``CMD start`` (split like a shell would, no shell involved).

    A non-zero exit or a run longer than `timeout` seconds raises `BrokerControlFailed`
    with the command's output."""

    def __init__(self, command: str, *, timeout: float = 120.0) -> None:
        self.argv = shlex.split(command)
        if not self.argv:
            raise ConfigurationError(
                "broker control: the command is empty; give a command that takes stop/start"
            )
        self.timeout = timeout

    def _call(self, verb: str) -> None:
        argv = [*self.argv, verb]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"broker control {self.argv[0]!r} was not found; give a command on the PATH "
                "or a path to an executable"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise BrokerControlFailed(
                f"broker control `{shlex.join(argv)}` did not finish in {self.timeout:g} s"
            ) from exc
        if proc.returncode != 0:
            output = (proc.stdout + proc.stderr).strip()[-2000:]
            raise BrokerControlFailed(
                f"broker control `{shlex.join(argv)}` exited with {proc.returncode}: {output}"
            )

    def stop(self) -> None:
        self._call("stop")

    def start(self) -> None:
        self._call("start")

    def __repr__(self) -> str:
        return f"CommandBrokerControl({shlex.join(self.argv)!r})"
