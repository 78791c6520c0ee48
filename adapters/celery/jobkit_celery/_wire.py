"""jobkit envelopes as Celery task messages, and back.

A job travels as a real Celery task message (protocol 2): task name = job name, task id = job
id, the job's args and kwargs as the task's, so Flower and ``celery inspect`` show what they
always show. The envelope fields Celery has no place for travel in one message header,
``jobkit`` (a JSON object).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from celery.utils.saferepr import saferepr

import jobkit
from jobkit import spi
from jobkit.spi import Envelope

HEADER = "jobkit"
DUE_HEADER = "x-jobkit-due"

REPR_LIMIT = 1024  # Celery's ``AMQP.argsrepr_maxsize`` and ``kwargsrepr_maxsize``
_FLAT = (str, int, float, bool, type(None))


def display_repr(values: list[Any] | dict[str, Any]) -> str:
    """The ``argsrepr`` / ``kwargsrepr`` Celery puts in a task message for Flower and
    ``celery inspect``: the same text Celery's own ``saferepr(values, 1024)`` gives, computed by
    the built-in ``repr`` when that is the same (no nested containers, 1,024 characters at most).
    ``saferepr`` is pure Python: about 17 us of CPU per message, 5 % of an enqueue."""
    items = values.values() if isinstance(values, dict) else values
    if all(type(value) in _FLAT for value in items):
        text = repr(values)
        if len(text) <= REPR_LIMIT:
            return text
    return str(saferepr(values, REPR_LIMIT))


def meta_of(env: Envelope) -> dict[str, Any]:
    """The envelope fields that go into the ``jobkit`` header. The optional ones are left out
    when unset (`envelope_of` reads a missing one as unset): on RabbitMQ every header field is
    encoded by the producer and decoded by the worker, in Python, for every message."""
    meta: dict[str, Any] = {
        "v": env.version,
        "queue": env.queue,
        "attempt": env.attempt,
        "max_attempts": env.max_attempts,
        "enqueued_at": env.enqueued_at.isoformat(),
        "priority": env.priority,
    }
    if env.not_before is not None:
        meta["not_before"] = env.not_before.isoformat()
    if env.idempotency_key is not None:
        meta["idempotency_key"] = env.idempotency_key
    if env.time_limit is not None:
        meta["time_limit"] = env.time_limit
    if env.headers:
        meta["headers"] = env.headers
    return meta


def envelope_of(
    *, task_id: str, name: str, args: Any, kwargs: Any, meta: Any, queue: str
) -> Envelope:
    """Rebuild the envelope of a task message. A plain Celery message (no ``jobkit`` header,
    e.g. sent with ``task.delay()``) becomes a fresh envelope with the defaults.

    Raises `SerializationError` if the fields are malformed, or if the header is there but is
    not a JSON object.
    """
    if meta is not None and not isinstance(meta, dict):
        raise jobkit.SerializationError(
            f"malformed jobkit header: a JSON {type(meta).__name__}, not an object"
        )
    if isinstance(meta, dict) and meta.get("v") == spi.ENVELOPE_VERSION:
        try:  # the fast path: a header jobkit wrote; checked field by field, no JSON round trip
            not_before = meta.get("not_before")
            headers = meta.get("headers") or {}
            limit = meta.get("time_limit")
            key = meta.get("idempotency_key")
            named = meta.get("queue")
            if not (
                (named is None or (isinstance(named, str) and named))
                and _is_int(meta["attempt"])
                and _is_int(meta["max_attempts"])
                and _is_int(meta["priority"])
                and isinstance(headers, dict)
                and all(isinstance(v, str) for v in headers.values())
                and (limit is None or _is_positive_number(limit))
                and (key is None or (isinstance(key, str) and key))
                and (not_before is None or isinstance(not_before, str))
                and meta["attempt"] >= 0
                and meta["max_attempts"] >= 1
            ):
                raise TypeError("a jobkit header field has the wrong type or value")
            return Envelope(
                id=task_id,
                job=name,
                args=tuple(args or ()),
                kwargs=dict(kwargs or {}),
                queue=named or queue,
                attempt=meta["attempt"],
                max_attempts=meta["max_attempts"],
                enqueued_at=datetime.fromisoformat(meta["enqueued_at"]),
                not_before=datetime.fromisoformat(not_before) if not_before else None,
                priority=meta["priority"],
                idempotency_key=key,
                time_limit=limit,
                headers=headers,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise jobkit.SerializationError(f"malformed jobkit header: {exc}") from exc
    data: dict[str, Any] = {
        "v": spi.ENVELOPE_VERSION,
        "id": task_id,
        "job": name,
        "args": list(args or ()),
        "kwargs": dict(kwargs or {}),
        "queue": queue,
        "attempt": 0,
        "max_attempts": 5,
        "enqueued_at": spi.SystemClock().now().isoformat(),
        "priority": 0,
    }
    if isinstance(meta, dict):
        data.update({k: v for k, v in meta.items() if v is not None})
    try:
        return spi.decode(json.dumps(data))
    except (TypeError, ValueError) as exc:
        raise jobkit.SerializationError(f"malformed jobkit header: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_positive_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


def envelope_from_message(headers: dict[str, Any], body: bytes) -> Envelope:
    """The envelope of a raw Celery protocol-2 message (headers + JSON body).

    Raises `SerializationError` for anything else.
    """
    try:
        name, task_id = headers["task"], headers["id"]
        args, kwargs, _embed = json.loads(body)
        if not (isinstance(name, str) and name and isinstance(task_id, str) and task_id):
            raise TypeError("the task name or id is not a non-empty string")
    except (KeyError, TypeError, ValueError) as exc:
        raise jobkit.SerializationError(f"not a Celery task message: {exc}") from exc
    meta = headers.get(HEADER)
    queue = meta.get("queue") if isinstance(meta, dict) else None
    return envelope_of(
        task_id=task_id,
        name=name,
        args=args,
        kwargs=kwargs,
        meta=meta,
        queue=str(queue or "default"),
    )


def due_timestamp(env: Envelope, now: datetime) -> float | None:
    """The epoch time the job is due at, or None if it is due now."""
    if env.not_before is None or env.not_before <= now:
        return None
    return env.not_before.timestamp()
