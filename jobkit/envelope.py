"""The envelope: one versioned JSON record that carries a job on every backend.

The same envelope on every broker is what makes migration between backends possible: a message
taken off one broker can be sent to another unchanged. Only JSON goes on the wire.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import jobkit._json as _json
from jobkit.errors import SerializationError

ENVELOPE_VERSION = 1

JSONValue = Any
"""A value that `json.dumps` accepts (checked at enqueue, not by the type system)."""


def new_job_id() -> str:
    """A fresh job id: 32 lowercase hex characters (a UUID4, as ``uuid.uuid4().hex``).

    Built from the random bytes directly: ``uuid.UUID``'s constructor is Python code that
    checks its arguments, and a producer makes one id per enqueue."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def utcnow() -> datetime:
    return datetime.now(UTC)


_EXACT_SCALARS = frozenset({str, int, float, bool, type(None)})


_STR = frozenset({str})


def _flat(values: Iterable[object]) -> bool:
    """Every value is of a type (exactly, not a subclass) that JSON gives back as it was.
    (Set operations over ``map(type, ...)``: no Python frame per value, on every enqueue.)"""
    return _EXACT_SCALARS.issuperset(map(type, values))


def _flat_map(mapping: dict[str, Any]) -> bool:
    """`_flat` values under keys that are exactly str (JSON turns other keys into strings)."""
    return type(mapping) is dict and _STR.issuperset(map(type, mapping)) and _flat(mapping.values())


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
        ``{"1": x}``). For enqueue; costs one C-level decode and compare per envelope, except
        when every argument and header is a plain str, int, float, bool or None, which JSON
        gives back exactly (floats are finite, or encoding raised)."""
        text = self._text()
        if _flat(self.args) and _flat_map(self.kwargs) and _flat_map(self.headers):
            return text.encode()
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


class UnsupportedEnvelopeVersion(SerializationError):
    """The envelope is from a newer jobkit (its version is above `ENVELOPE_VERSION`).

    Not a broken message: a worker running the newer jobkit can read it, so the worker
    releases it for one (see `WorkerOptions.unknown_job_timeout`) instead of dead-lettering it.
    """

    def __init__(self, message: str, *, version: int) -> None:
        super().__init__(message)
        self.version = version


def decode(body: bytes | str) -> Envelope:
    """Parse an envelope, checking the type of every field.

    Raises `UnsupportedEnvelopeVersion` for an envelope from a newer jobkit, and
    `SerializationError` with the reason for anything else malformed (not JSON, a missing field,
    a field of the wrong type, a bad timestamp, a non-positive time limit...).
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise SerializationError(f"message body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise SerializationError(f"message body is JSON {type(data).__name__}, not an object")
    version = data.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version > ENVELOPE_VERSION:
        raise UnsupportedEnvelopeVersion(
            f"envelope version {version} is newer than this jobkit reads ({ENVELOPE_VERSION}); "
            "upgrade this worker's jobkit",
            version=version,
        )
    if version != ENVELOPE_VERSION or not _is_int(version):
        raise SerializationError(
            f"envelope version {version!r} is not supported (this jobkit reads {ENVELOPE_VERSION})"
        )
    try:
        env = Envelope(
            id=_str(data, "id"),
            job=_str(data, "job"),
            args=tuple(_typed(data, "args", list)),
            kwargs=_typed(data, "kwargs", dict),
            queue=_str(data, "queue"),
            attempt=_count(data, "attempt", minimum=0),
            max_attempts=_count(data, "max_attempts", minimum=1),
            enqueued_at=_timestamp(_str(data, "enqueued_at"), "enqueued_at"),
            not_before=_optional_timestamp(data, "not_before"),
            priority=_typed(data, "priority", int),
            idempotency_key=_optional_str(data, "idempotency_key"),
            time_limit=_time_limit(data),
            headers=_headers(data),
        )
    except (TypeError, ValueError, KeyError) as exc:
        raise SerializationError(f"malformed envelope: {exc}") from exc
    return env


@dataclass(frozen=True, kw_only=True)
class Salvage:
    """What can be read from a message body that does not decode: each field None if absent or
    of the wrong type. Lets the worker record the job DEAD under its id, and time out an
    envelope from a newer jobkit."""

    id: str | None = None
    job: str | None = None
    queue: str | None = None
    version: int | None = None
    enqueued_at: datetime | None = None
    not_before: datetime | None = None

    @property
    def since(self) -> datetime | None:
        """When the job became due: `not_before`, else `enqueued_at`."""
        return self.not_before or self.enqueued_at


def salvage(body: bytes | str) -> Salvage:
    """Read what can be read of a body that `decode` refuses. Never raises."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Salvage()
    if not isinstance(data, dict):
        return Salvage()

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    def when(key: str) -> datetime | None:
        value = text(key)
        try:
            return _timestamp(value, key) if value is not None else None
        except ValueError:
            return None

    version = data.get("v")
    return Salvage(
        id=text("id"),
        job=text("job"),
        queue=text("queue"),
        version=version if _is_int(version) else None,
        enqueued_at=when("enqueued_at"),
        not_before=when("not_before"),
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _typed(data: dict[str, Any], key: str, kind: type) -> Any:
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"field {key!r} is {type(value).__name__}, expected {kind.__name__}")
    return value


def _str(data: dict[str, Any], key: str) -> str:
    value: str = _typed(data, key, str)
    return value


def _optional_str(data: dict[str, Any], key: str) -> str | None:
    if data.get(key) is None:
        return None
    value = _str(data, key)
    if not value:
        raise ValueError(f"field {key!r} is an empty string")
    return value


def _count(data: dict[str, Any], key: str, *, minimum: int) -> int:
    value: int = _typed(data, key, int)
    if value < minimum:
        raise ValueError(f"field {key!r} is {value}, expected at least {minimum}")
    return value


def _timestamp(text: str, key: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"field {key!r} is not an ISO 8601 timestamp: {text!r}") from exc
    if value.tzinfo is None:
        raise ValueError(f"field {key!r} has no timezone: {text!r}")
    return value


def _optional_timestamp(data: dict[str, Any], key: str) -> datetime | None:
    if data.get(key) is None:
        return None
    return _timestamp(_str(data, key), key)


def _time_limit(data: dict[str, Any]) -> float | None:
    value = data.get("time_limit")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"field 'time_limit' is {type(value).__name__}, expected a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"field 'time_limit' is {value!r}, expected a positive number of seconds")
    return float(value)


def _headers(data: dict[str, Any]) -> dict[str, str]:
    value = data.get("headers")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"field 'headers' is {type(value).__name__}, expected an object")
    for name, item in value.items():
        if not isinstance(item, str):
            raise TypeError(f"header {name!r} is {type(item).__name__}, expected str")
    return value
