"""Exact JSON: a value is accepted only if it comes back from JSON as it went in.

`json.dumps` quietly turns tuples into lists and non-str dict keys into strings, so a job would
not get what was enqueued. The check is cheap on the hot path: encode and decode in C and compare
(a tuple never equals a list, ``1`` never equals ``"1"``); only when that fails does a Python walk
find the first offending value and name its path, e.g. ``kwargs['order']['items'][2]``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from jobkit.errors import SerializationError

_ADVICE = "pass ids, strings, numbers, booleans, None, lists or str-keyed dicts instead"

_HINTS: dict[str, str] = {
    "tuple": "it would arrive as a list; pass a list",
    "set": "pass a sorted list",
    "frozenset": "pass a sorted list",
    "bytes": "pass text (for example base64) or a reference to where the data is",
    "bytearray": "pass text (for example base64) or a reference to where the data is",
    "datetime": "pass an ISO 8601 string (value.isoformat()) or a timestamp",
    "date": "pass an ISO 8601 string (value.isoformat())",
    "time": "pass an ISO 8601 string (value.isoformat())",
    "timedelta": "pass a number of seconds (value.total_seconds())",
    "Decimal": "pass a string (str(value)) or an int of the smallest unit",
    "UUID": "pass a string (str(value) or value.hex)",
}


_EXACT = frozenset({str, bool, int})
"""Types whose values always come back from JSON as they went in (``ensure_ascii`` escapes
lone surrogates, and Python's JSON reads ints of any size)."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
_DECODER = json.JSONDecoder()
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
# The C encoder `_ENCODER.encode` builds on every call, built once: `JSONEncoder.encode` and
# `iterencode` are Python code run on every enqueue (they also define a closure each time).
# Stateless without circular-reference markers: a value that refers to itself ends in
# RecursionError, which callers report as "refers to itself".
_C_ENCODE: Any = None
if _c_make_encoder is not None:
    # (markers, default, encoder, indent, key separator, item separator, sort_keys, skipkeys,
    # allow_nan), as `JSONEncoder.iterencode` passes them
    _C_ENCODE = _c_make_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",",
        False, False, False,
    )  # fmt: skip


def dumps(value: Any) -> str:
    """Compact JSON text, ASCII only; raises `TypeError`/`ValueError` for what JSON cannot hold
    (`RecursionError` for a value that refers to itself). Thread-safe."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def loads(text: str) -> Any:
    return _DECODER.decode(text)


def problem(value: Any, path: str) -> str | None:
    """The first value under `value` that does not round-trip through JSON, as
    ``"<path>: <what> is not JSON: <what to do>"``, or None if everything does."""
    try:
        return _walk(value, path)
    except RecursionError:
        return f"{path}: nested too deeply or refers to itself; pass a flat, acyclic value"


def _walk(value: Any, path: str) -> str | None:
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{path}: {value!r} is not JSON: pass a finite number, or None"
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _walk(item, f"{path}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"{path}: dict key {key!r} ({type(key).__name__}) is not JSON: JSON would "
                    f"turn it into the string {dumps(str(key))}; use str keys"
                )
            found = _walk(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    kind = type(value).__name__
    return f"{path}: {kind} is not JSON: {_HINTS.get(kind, _ADVICE)}"


def check_round_trip(value: Any, path: str, *, what: str) -> None:
    """Raise `SerializationError` (``what: <problem>``) unless `value` round-trips exactly.

    For values that were not encoded yet (results); arguments are checked in `Envelope.encode`.
    None, str, bool and int (exact types: a subclass may not come back as itself) round-trip by
    definition and skip the encoding, the common results of a job on every worker's hot path.
    """
    if value is None or type(value) in _EXACT:
        return
    try:
        same = loads(dumps(value)) == value
    except (TypeError, ValueError, RecursionError):
        same = False
    if not same:
        raise SerializationError(f"{what}: {problem(value, path) or f'{path} is not JSON'}")
