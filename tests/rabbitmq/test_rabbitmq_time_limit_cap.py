"""The cap on each job's time limit below RabbitMQ's consumer_timeout (`cap_time_limit`): the
envelope's own field is capped, never a look-alike nested in the arguments or the headers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobkit_rabbitmq._time_limit import cap_time_limit

from jobkit.spi import Envelope, decode

BOUND = 9.0

_keys = st.sampled_from(["time_limit", "headers", "x", "é"]) | st.text(max_size=5)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from([',"time_limit":null,"headers":{}}', '"time_limit":1e9'])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=3),
    max_leaves=8,
)
_limits = st.none() | st.floats(min_value=0.001, max_value=1e6) | st.integers(1, 10**6)


def _expected(body: bytes) -> dict[str, Any]:
    data = json.loads(body)
    limit = data["time_limit"]
    if limit is None or limit > BOUND:
        data["time_limit"] = BOUND
    return data


@given(
    args=st.lists(_values, max_size=3),
    kwargs=st.dictionaries(_keys, _values, max_size=3),
    headers=st.dictionaries(st.text(max_size=5), st.text(max_size=8), max_size=3),
    limit=_limits,
)
def test_only_the_envelopes_own_time_limit_is_capped(
    args: list[Any], kwargs: dict[str, Any], headers: dict[str, str], limit: float | None
) -> None:
    env = Envelope(job="j", args=tuple(args), kwargs=kwargs, headers=headers, time_limit=limit)
    body = env.encode()
    capped = cap_time_limit(body, BOUND)
    assert json.loads(capped) == _expected(body)
    assert decode(capped).args == env.args
    assert decode(capped).kwargs == env.kwargs


@pytest.mark.parametrize(
    "body",
    [
        # another producer's field order: the time limit after the headers
        b'{"v":1,"id":"a","job":"j","args":[],"kwargs":{},"queue":"q","attempt":0,'
        b'"max_attempts":5,"enqueued_at":"2026-01-01T00:00:00+00:00","not_before":null,'
        b'"priority":0,"idempotency_key":null,"headers":{},"time_limit":null}',
        # a look-alike nested in the arguments, the envelope's own limit written with spaces
        b'{"v":1,"id":"a","job":"j","args":[],"kwargs":{"o":{"a":1,"time_limit":null,'
        b'"headers":{}}},"queue":"q","attempt":0,"max_attempts":5,'
        b'"enqueued_at":"2026-01-01T00:00:00+00:00","not_before":null,"priority":0,'
        b'"idempotency_key":null, "time_limit": 60, "headers": {}}',
        # trailing whitespace after the envelope
        b'{"v":1,"id":"a","job":"j","args":[],"kwargs":{},"queue":"q","attempt":0,'
        b'"max_attempts":5,"enqueued_at":"2026-01-01T00:00:00+00:00","not_before":null,'
        b'"priority":0,"idempotency_key":null,"time_limit":null,"headers":{}}\n',
    ],
)
def test_envelopes_written_otherwise_are_capped_too(body: bytes) -> None:
    capped = json.loads(cap_time_limit(body, BOUND))
    assert capped == _expected(body)
    assert capped["kwargs"] == json.loads(body)["kwargs"]


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"v":1,"time_limit":"soon","headers":{}}', b"\xff{}"]
)
def test_a_body_without_a_numeric_time_limit_is_left_as_it_is(body: bytes) -> None:
    assert cap_time_limit(body, BOUND) == body
