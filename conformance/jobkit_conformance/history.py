"""Histories: every operation of a run, in Jepsen's model.

Each operation is recorded twice: an `INVOKE` when it begins and a completion when it ends,
`OK` (it happened), `FAIL` (it certainly did not happen) or `UNKNOWN` (it may or may not have
happened: a job killed mid-run, an enqueue whose reply was lost). Faults are operations of the
``nemesis`` process; worker executions, read back from the effect ledger, are operations of the
``worker:<pid>`` processes; what the probe saw at the end is an ``OK`` of the ``probe`` process.

Times are seconds since the epoch (``time.time()``), because they are compared with times
written by other processes.

A history is plain data: checkers (`jobkit_conformance.checkers`) are pure functions of it, so
they can be tested on histories written by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class OpType(StrEnum):
    INVOKE = "invoke"
    OK = "ok"
    FAIL = "fail"
    UNKNOWN = "unknown"


class F(StrEnum):
    """What an operation does."""

    ENQUEUE = "enqueue"  # client: value = the job's expectations (see `JobSpec`)
    RUN = "run"  # worker: one execution of a job; OK value = {"attempt": n}; FAIL = raised
    EFFECT = "effect"  # worker: the job's side effect happened (value = {"key": ...})
    KILL = "kill"  # nemesis: SIGKILL of a worker process group
    TERM = "term"  # nemesis: SIGTERM of a worker (graceful)
    STOP = "stop"  # nemesis: SIGSTOP of a worker
    CONT = "cont"  # nemesis: SIGCONT of a worker
    DUPLICATE = "duplicate"  # nemesis: the same envelope published again
    INJECT = "inject"  # nemesis: raw bytes put on a queue through the native client
    REPLAY = "replay"  # client: dead letters moved back to their queue (value = {"count": n})
    DEAD = "dead"  # probe: the dead-letter queue (value = {"entries": [...]})
    DEPTH = "depth"  # probe: queue depth (value = {"ready": n, ...})
    WORKER = "worker"  # nemesis: a worker started (invoke) / exited (ok, value = {"code": n})
    RECEIVED = "received"  # worker: fingerprints of what a job received and returned
    RESULT = "result"  # client: what the job's handle reports (state, result fingerprint)
    LIST = "list"  # client: the dead letters listed through the backend under test
    PURGE = "purge"  # client: dead letters purged through the backend (value = {"count": n})
    CLAIM = "claim"  # harness: the run's declared bounds (value = see `Context.claim`)
    MIGRATE = "migrate"  # migrator: jobs seeded, migrated there and back, found (by id)
    BROKER_STOP = "broker_stop"  # nemesis: the broker stopped through the user's broker control
    BROKER_START = "broker_start"  # nemesis: the broker started again
    PRODUCER = "producer"  # nemesis: a producer process started (invoke) / was killed (ok)
    OBSERVE = "observe"  # client: one promise of an interface observed (see checkers.contract)


@dataclass(frozen=True, kw_only=True)
class Op:
    process: str
    type: OpType
    f: F
    time: float
    job_id: str | None = None
    value: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "type": str(self.type),
            "f": str(self.f),
            "time": self.time,
            "job_id": self.job_id,
            "value": self.value,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Op:
        return Op(
            process=str(data["process"]),
            type=OpType(data["type"]),
            f=F(data["f"]),
            time=float(data["time"]),
            job_id=data.get("job_id"),
            value=dict(data.get("value") or {}),
        )


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What the harness expects of one enqueued job; carried in the ENQUEUE invoke's value.

    `outcome` is "succeed" (must run to success), "dead" (must end in the dead-letter queue),
    or "any" (success or dead letter, e.g. a job whose fate depends on injected faults).
    """

    kind: str
    job: str = ""
    args: tuple[Any, ...] = ()
    outcome: str = "succeed"
    key: str | None = None
    max_attempts: int = 5
    failures: int = 0  # transient failures before success (flaky jobs)
    permanent: bool = False
    not_before: float | None = None
    priority: int = 0
    time_limit: float | None = None
    backoff_min: tuple[float, ...] = ()  # lower bound of the wait after failed attempt n (1-based)
    backoff_max: tuple[float, ...] = ()  # upper bound of that wait (the policy's, before jitter)
    duration: float = 0.0
    feature: str | None = None  # for refused enqueues: the unclaimed feature asked for

    def to_value(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "job": self.job,
            "args": list(self.args),
            "outcome": self.outcome,
            "key": self.key,
            "max_attempts": self.max_attempts,
            "failures": self.failures,
            "permanent": self.permanent,
            "not_before": self.not_before,
            "priority": self.priority,
            "time_limit": self.time_limit,
            "backoff_min": list(self.backoff_min),
            "backoff_max": list(self.backoff_max),
            "duration": self.duration,
            "feature": self.feature,
        }

    @staticmethod
    def from_value(value: dict[str, Any]) -> JobSpec:
        return JobSpec(
            kind=str(value.get("kind", "?")),
            job=str(value.get("job", "")),
            args=tuple(value.get("args", ())),
            outcome=str(value.get("outcome", "succeed")),
            key=value.get("key"),
            max_attempts=int(value.get("max_attempts", 5)),
            failures=int(value.get("failures", 0)),
            permanent=bool(value.get("permanent", False)),
            not_before=value.get("not_before"),
            priority=int(value.get("priority", 0)),
            time_limit=value.get("time_limit"),
            backoff_min=tuple(float(x) for x in value.get("backoff_min", ())),
            backoff_max=tuple(float(x) for x in value.get("backoff_max", ())),
            duration=float(value.get("duration", 0.0)),
            feature=value.get("feature"),
        )


class History:
    """An append-only list of operations, in the order they were recorded. Not thread-safe:
    a scenario owns its history (the harness merges them afterwards)."""

    def __init__(self, ops: Iterable[Op] = ()) -> None:
        self.ops: list[Op] = list(ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def add(self, op: Op) -> Op:
        self.ops.append(op)
        return op

    def extend(self, ops: Iterable[Op]) -> None:
        self.ops.extend(ops)

    def sorted(self) -> History:
        """The same operations ordered by time (stable)."""
        return History(sorted(self.ops, key=lambda op: op.time))

    def select(
        self,
        *,
        f: F | None = None,
        type: OpType | None = None,
        job_id: str | None = None,
    ) -> list[Op]:
        return [
            op
            for op in self.ops
            if (f is None or op.f is f)
            and (type is None or op.type is type)
            and (job_id is None or op.job_id == job_id)
        ]

    def to_jsonl(self) -> str:
        return "".join(json.dumps(op.to_dict(), sort_keys=True) + "\n" for op in self.ops)

    @staticmethod
    def from_jsonl(text: str) -> History:
        return History(Op.from_dict(json.loads(line)) for line in text.splitlines() if line.strip())
