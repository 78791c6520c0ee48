"""The envelope: one versioned JSON record that carries a job on every backend.

The same envelope on every broker is what makes migration between backends possible: a message
taken off one broker can be sent to another unchanged. Only JSON goes on the wire.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jobkit._json as _json
from jobkit.errors import SerializationError

ENVELOPE_VERSION = 1

JSONValue = Any
"""A value that `json.dumps` accepts (checked at enqueue, not by the type system)."""


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex characters (a UUID4)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """One job invocation, as it travels through a broker.

    `attempt` is the number of attempts made *before* this message was sent: 0 for a fresh job.
    Backends add the broker's own delivery count to it, so a crash redelivery counts too.
    """

    id: str = field(default_factory=new_job_id)
    job: str
    args: tuple[JSONValue, ...] = ()
    kwargs: dict[str, JSONValue] = field(default_factory=dict)
    queue: str = "default"
    attempt: int = 0
    max_attempts: int = 5
    enqueued_at: datetime = field(default_factory=utcnow)
    not_before: datetime | None = None
    priority: int = 0
    idempotency_key: str | None = None
    time_limit: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    version: int = ENVELOPE_VERSION

    def to_dict(self) -> dict[str, JSONValue]:
        return {
            "v": self.version,
            "id": self.id,
            "job": self.job,
            "args": list(self.args),
            "kwargs": self.kwargs,
            "queue": self.queue,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "enqueued_at": self.enqueued_at.isoformat(),
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "priority": self.priority,
            "idempotency_key": self.idempotency_key,
            "time_limit": self.time_limit,
            "headers": self.headers,
        }

    def encode(self) -> bytes:
        """The JSON bytes of this envelope. Raises `SerializationError` naming a bad argument."""
        return self._text().encode()

    def encode_exact(self) -> bytes:
        """`encode`, and raise `SerializationError` unless the arguments and headers come back
        from the bytes exactly as they are here (a tuple would arrive as a list, ``{1: x}`` as
        ``{"1": x}``). For enqueue; costs one C-level decode and compare per envelope."""
        text = self._text()
        data = _json.loads(text)
        if (
            data["args"] != list(self.args)
            or data["kwargs"] != self.kwargs
            or data["headers"] != self.headers
        ):
            raise SerializationError(f"job {self.job!r}: {self.argument_problem()}")
        return text.encode()

    def _text(self) -> str:
        try:
            return _json.dumps(self.to_dict())
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"job {self.job!r}: {self.argument_problem()}") from exc

    def argument_problem(self) -> str:
        """The first argument or header that is not exact JSON, with its path, e.g.
        ``kwargs['order']['items'][2]: tuple is not JSON: ...``."""
        return (
            _json.problem(list(self.args), "args")
            or _json.problem(self.kwargs, "kwargs")
            or _json.problem(self.headers, "headers")
            or "arguments are not JSON"
        )

    def with_attempt(self, attempt: int) -> Envelope:
        return replace(self, attempt=attempt)


def decode(body: bytes | str) -> Envelope:
    """Parse an envelope. Raises `SerializationError` with the reason for anything malformed."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SerializationError(f"message body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SerializationError(f"message body is JSON {type(data).__name__}, not an object")
    version = data.get("v")
    if version != ENVELOPE_VERSION:
        raise SerializationError(
            f"envelope version {version!r} is not supported (this jobkit reads {ENVELOPE_VERSION})"
        )
    try:
        not_before = data.get("not_before")
        env = Envelope(
            id=_str(data, "id"),
            job=_str(data, "job"),
            args=tuple(_typed(data, "args", list)),
            kwargs=_typed(data, "kwargs", dict),
            queue=_str(data, "queue"),
            attempt=_typed(data, "attempt", int),
            max_attempts=_typed(data, "max_attempts", int),
            enqueued_at=datetime.fromisoformat(_str(data, "enqueued_at")),
            not_before=datetime.fromisoformat(not_before) if not_before else None,
            priority=_typed(data, "priority", int),
            idempotency_key=data.get("idempotency_key"),
            time_limit=data.get("time_limit"),
            headers=data.get("headers") or {},
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise SerializationError(f"malformed envelope: {exc}") from exc
    return env


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value: str = _typed(data, key, str)
    return value
