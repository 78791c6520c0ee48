"""jobkit envelopes inside Dramatiq messages.

A jobkit job travels as a Dramatiq message (Dramatiq's JSON encoding, what ``actor.send``
produces) whose actor is the job's name and whose only argument is the jobkit envelope, as a
JSON string: Dramatiq's dashboard and middleware see the job by name, and a plain ``dramatiq``
worker runs it through the actor `jobkit_dramatiq.actors` registers. jobkit's worker reads the
envelope back with `envelope_of`.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta
from typing import Any

_SEPARATORS = (",", ":")  # Dramatiq's JSONEncoder's
_string = json.encoder.encode_basestring  # what ``ensure_ascii=False`` encodes strings with
_encode_options = json.JSONEncoder(separators=_SEPARATORS, ensure_ascii=False).encode


def eta_after(delay: timedelta) -> int:
    """Dramatiq's ``eta`` (epoch ms) for a message delayed `delay` from now, rounded up: the
    brokers compare it with the current ms rounded down, and a job must never start before its
    delay has passed (rounded down, it could start up to 1 ms early)."""
    return math.ceil((time.time() + delay.total_seconds()) * 1000)


def job_name(body: bytes) -> str:
    """The envelope's job name, or ``"unknown"`` when `body` is no envelope (a poison
    message still gets a well-formed Dramatiq message, which its reason names)."""
    try:
        data = json.loads(body)
    except ValueError:
        return "unknown"
    name = data.get("job") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else "unknown"


def encode(
    *, queue: str, job_id: str, body: bytes, options: dict[str, Any], actor: str | None = None
) -> bytes:
    """A Dramatiq message carrying `body` (the encoded envelope) for the actor `actor`: the
    bytes ``json.dumps`` gives for Dramatiq's message dict (compact, ``ensure_ascii=False``),
    written field by field with the encoder's own string function (``json.dumps`` with
    options builds a new encoder on every call, and this runs on every enqueue)."""
    name = actor or job_name(body)
    text = (
        f'{{"queue_name":{_string(queue)},"actor_name":{_string(name)},'
        f'"args":[{_string(body.decode("utf-8", "surrogateescape"))}],"kwargs":{{}},'
        f'"options":{_encode_options(options) if options else "{}"},'
        f'"message_id":{_string(job_id)},"message_timestamp":{int(time.time() * 1000)}}}'
    )
    return text.encode("utf-8", "surrogateescape")


def decode(data: bytes) -> dict[str, Any] | None:
    """The Dramatiq message in `data`, or None when it is not one (undecodable, or missing the
    fields every Dramatiq message has)."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("args"), list):
        return None
    if not isinstance(message.get("options", {}), dict):
        return None
    return message


def envelope_of(data: bytes) -> bytes:
    """The jobkit envelope carried by the Dramatiq message `data`.

    A message that is not a Dramatiq message, or whose argument is not one string (one sent by
    a plain Dramatiq producer to a jobkit actor, say), is returned unchanged: jobkit's worker
    then fails to decode it and dead-letters it with the reason."""
    message = decode(data)
    if message is None:
        return data
    args = message["args"]
    if len(args) == 1 and isinstance(args[0], str) and not message.get("kwargs"):
        return args[0].encode("utf-8", "surrogateescape")
    return data


def with_options(data: bytes, **options: Any) -> bytes:
    """`data` with Dramatiq `options` set (None removes one); undecodable data unchanged."""
    message = decode(data)
    if message is None:
        return data
    merged = dict(message.get("options") or {})
    for key, value in options.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    message["options"] = merged
    return json.dumps(message, separators=_SEPARATORS, ensure_ascii=False).encode(
        "utf-8", "surrogateescape"
    )


def with_envelope(data: bytes, body: bytes) -> bytes:
    """`data` (a Dramatiq message) carrying `body` as its envelope instead; undecodable `data`
    becomes `body` itself."""
    message = decode(data)
    if message is None:
        return body
    message["args"] = [body.decode("utf-8", "surrogateescape")]
    message["kwargs"] = {}
    return json.dumps(message, separators=_SEPARATORS, ensure_ascii=False).encode(
        "utf-8", "surrogateescape"
    )


def message_id(data: bytes, default: str) -> str:
    message = decode(data)
    value = message.get("message_id") if message else None
    return value if isinstance(value, str) else default
