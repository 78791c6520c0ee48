"""A simulated broker around a SQLite file, and its broker control for the self-test.

``python -m jobkit_mutants._control /path/jobs.db stop|start`` marks the "broker" of that
database stopped or started (a state file beside it). Backends built on it
(`jobkit_mutants._durability.OnSimulatedBroker`) refuse every call while it is stopped, as a
real client does while its broker is down. A *volatile* one (it marks the database when it
opens) loses every queued message at each stop, as a broker that keeps its queues only in
memory does.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobkit import ConfigurationError


@dataclass(frozen=True)
class SimulatedBroker:
    db: Path

    @staticmethod
    def for_url(url: str) -> SimulatedBroker:
        if not url.startswith("sqlite:///"):
            raise ConfigurationError(f"the simulated broker needs a sqlite:/// URL, not {url!r}")
        return SimulatedBroker(Path(url.removeprefix("sqlite:///").split("?", 1)[0]).absolute())

    @property
    def _state(self) -> Path:
        return self.db.with_name(self.db.name + ".broker")

    @contextmanager
    def _locked(self) -> Iterator[dict[str, int]]:
        lock = self.db.with_name(self.db.name + ".broker-lock")
        with lock.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                state = json.loads(self._state.read_text()) if self._state.exists() else {}
                state.setdefault("up", 1)
                before = dict(state)
                yield state
                if state != before:
                    self._state.write_text(json.dumps(state))
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    @property
    def _volatile_mark(self) -> Path:
        return self.db.with_name(self.db.name + ".broker-volatile")

    def mark_volatile(self) -> None:
        self._volatile_mark.touch()

    def up(self) -> bool:
        with self._locked() as state:
            return bool(state["up"])

    def stop(self) -> None:
        with self._locked() as state:
            state["up"] = 0
            if self._volatile_mark.exists():  # what lived only in memory is gone
                with sqlite3.connect(self.db, timeout=30) as db:
                    db.execute("DELETE FROM jobkit_messages WHERE state != 'dead'")
                db.close()

    def start(self) -> None:
        with self._locked() as state:
            state["up"] = 1


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("stop", "start"):
        print("usage: python -m jobkit_mutants._control DB_PATH stop|start", file=sys.stderr)
        return 2
    broker = SimulatedBroker(Path(argv[0]).absolute())
    broker.stop() if argv[1] == "stop" else broker.start()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
