"""Payloads that exercise the JSON space, and their fingerprints.

A fingerprint maps every path of a JSON value (``$``, ``$[2]``, ``$["text"][0]``) to a short
digest of what sits there: the canonical JSON of a leaf (so ``1``, ``1.0`` and ``"1"`` differ,
and a float differs from its neighbour in the 17th significant digit), or the kind and size of
a container. Comparing two fingerprints names the first path that differs without carrying
large values around: the job records the fingerprint of what it received and returned, the
harness the fingerprint of what it enqueued and of what ``handle.result()`` gave back.

Pure functions, no I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

Fingerprint = dict[str, str]

# Values a broker or a codec is known to get wrong, each a positional argument of one job.
TRICKY: tuple[tuple[str, Any], ...] = (
    ("non-ascii", "naïve café, Ærøskøbing, Ελληνικά, русский, 日本語, עברית"),
    ("astral", "emoji 😀🎉, math \U0001d518\U0001d52b, flag 🇪🇺, ZWJ 👩\u200d👩\u200d👧"),
    ("controls", 'tab\tnew line\nquote" backslash\\ nul\x00 del\x7f line-sep\u2028'),
    ("empty", ["", [], {}, {"": ""}]),
    ("ints", [2**63 - 1, 2**63, 2**64 + 1, -(2**63), -(2**63) - 1, 2**53 + 1, 10**30, 0, -1]),
    ("floats", [0.1, 1 / 3, 2.0**-1074, 1.7976931348623157e308, -0.0, 123456789.12345678, 1e-7]),
    ("scalars", [True, False, None, 1, 1.0, "1"]),
    ("keys", {"b": 1, "a": 2, "ünï": 3, "😀": 4, " ": 5, "1": 6}),
)

NESTING = 48  # depth of the deeply nested argument (well inside every JSON parser's limits)


def nested(depth: int = NESTING) -> Any:
    """A list and dict alternately nested `depth` levels deep, a leaf at the bottom."""
    value: Any = "bottom"
    for level in range(depth):
        value = [value, level] if level % 2 else {"level": level, "next": value}
    return value


def big_text(n_bytes: int) -> str:
    """Text whose JSON encoding (ASCII-escaped, as jobkit sends it) takes at least `n_bytes`,
    mixing ASCII, two-byte, three-byte and astral characters, and varying so a truncation or
    a swapped chunk shows."""
    unit = "abcdefghij-é-€-😀-"
    per_part = len(json.dumps(unit)) - 2 + 6  # \\u-escaped, plus the 6-digit counter
    return "".join(f"{i:06d}{unit}" for i in range(n_bytes // per_part + 1))


def fingerprint(value: Any) -> Fingerprint:
    """Path -> digest for every node of `value` (see the module docstring)."""
    return dict(_walk("$", value))


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def _walk(path: str, value: Any) -> Iterator[tuple[str, str]]:
    if isinstance(value, list | tuple):
        yield path, f"list[{len(value)}]"
        for index, item in enumerate(value):
            yield from _walk(f"{path}[{index}]", item)
    elif isinstance(value, dict):
        keys = list(value)
        yield path, f"object{{{len(keys)}}}:" + _digest(json.dumps(sorted(keys)))
        for key in keys:
            yield from _walk(f"{path}[{json.dumps(key)}]", value[key])
    else:
        text = json.dumps(value, allow_nan=True)
        yield path, (text if len(text) <= 24 else f"{_kind(value)}:{len(text)}:{_digest(text)}")


def _kind(value: Any) -> str:
    return type(value).__name__


def differences(expected: Fingerprint, got: Fingerprint, *, limit: int = 3) -> list[str]:
    """The first `limit` paths where `got` differs from `expected`, each with both sides."""
    out: list[str] = []
    for path in sorted(expected.keys() | got.keys(), key=_path_order):
        want, have = expected.get(path), got.get(path)
        if want == have:
            continue
        if want is None:
            out.append(f"{path} is extra ({have})")
        elif have is None:
            out.append(f"{path} is missing (expected {want})")
        else:
            out.append(f"{path} is {have}, expected {want}")
        if len(out) >= limit:
            break
    return out


def _path_order(path: str) -> tuple[int, str]:
    return (path.count("["), path)
