"""What Celery itself needs from a protocol-2 task message, checked before Celery reads it.

Celery's consumer builds a request from the message's headers and body in the worker's main
process. Some broken values it turns into `InvalidTaskError` (an ETA that is not a date); others
raise where nothing catches them and the whole worker exits (measured on Celery 5.7: a
``timelimit`` header that is not a pair, a body that is JSON but not ``[args, kwargs, embed]``),
and the message, left unacked, stops the next worker the same way. `problem` names what is wrong
with such a message so the consumer can dead-letter it instead.
"""

from __future__ import annotations

import math
from typing import Any

from kombu.exceptions import ContentDisallowed, DecodeError, KombuError

_TEXT_HEADERS = ("root_id", "parent_id", "group", "shadow", "argsrepr", "kwargsrepr")


def _number_or_none(value: Any) -> bool:
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def header_problem(headers: dict[str, Any]) -> str | None:
    """What is wrong with the Celery headers of a protocol-2 message (None if nothing)."""
    for name in ("task", "id"):
        value = headers.get(name)
        if not isinstance(value, str) or not value:
            return f"header {name!r} is {value!r}, not a non-empty string"
    timelimit = headers.get("timelimit")
    if timelimit and not (
        isinstance(timelimit, list | tuple)
        and len(timelimit) == 2
        and all(_number_or_none(t) for t in timelimit)
    ):
        return f"header 'timelimit' is {timelimit!r}, not [hard or null, soft or null] seconds"
    retries = headers.get("retries", 0)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        return f"header 'retries' is {retries!r}, not a whole number >= 0"
    for name in _TEXT_HEADERS:
        value = headers.get(name)
        if value is not None and not isinstance(value, str):
            return f"header {name!r} is {value!r}, not a string"
    return None


def body_problem(message: Any) -> str | None:
    """What is wrong with the body of a protocol-2 message: not decodable in an accepted content
    type, or not ``[args (list), kwargs (object), embed (object or null)]``. Decodes the body
    once: kombu keeps the result, which Celery then uses."""
    try:
        payload = message.decode()
    except ContentDisallowed as exc:
        return f"content type {message.content_type!r} is not accepted (JSON only): {exc}"
    except (DecodeError, KombuError, ValueError, TypeError, UnicodeError) as exc:
        return f"undecodable message body: {type(exc).__name__}: {exc}"
    if not (
        isinstance(payload, list | tuple)
        and len(payload) == 3
        and isinstance(payload[0], list | tuple)
        and isinstance(payload[1], dict)
        and (payload[2] is None or isinstance(payload[2], dict))
    ):
        return "body is not a Celery task body [args (list), kwargs (object), embed (object)]"
    return None


def problem(message: Any) -> str | None:
    """Why Celery cannot build a request from `message` (None if it can, or if the message is
    not protocol 2: Celery's own checks then route it)."""
    headers = message.headers
    if not isinstance(headers, dict) or "task" not in headers:
        return None
    found = header_problem(headers)
    if found is None:
        found = body_problem(message)
    return None if found is None else f"invalid task message: {found}"
