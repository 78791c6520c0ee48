import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobkit import SerializationError
from jobkit.spi import Envelope, Salvage, UnsupportedEnvelopeVersion, decode, salvage


def test_envelope_round_trips_through_json() -> None:
    env = Envelope(
        job="shop.charge",
        args=(1, "x"),
        kwargs={"cents": 5},
        queue="q",
        attempt=2,
        max_attempts=7,
        not_before=datetime(2030, 1, 1, tzinfo=UTC),
        priority=3,
        idempotency_key="order-1",
        time_limit=2.5,
        headers={"traceparent": "00-abc"},
    )
    assert decode(env.encode()) == env


def test_non_json_argument_is_named_in_the_error() -> None:
    env = Envelope(job="j", args=(1, datetime.now()), kwargs={})
    with pytest.raises(SerializationError, match=r"args\[1\]: datetime is not JSON"):
        env.encode()


def test_non_json_keyword_argument_is_named_in_the_error() -> None:
    env = Envelope(job="j", kwargs={"when": {1, 2}})
    with pytest.raises(SerializationError, match=r"kwargs\['when'\]: set is not JSON"):
        env.encode()


def test_nan_is_refused_because_it_is_not_json() -> None:
    with pytest.raises(SerializationError, match=r"args\[0\]: nan is not JSON"):
        Envelope(job="j", args=(float("nan"),)).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not utf8", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"v": 99}', "version 99"),
        (b'{"v": 1, "id": "x"}', "malformed envelope"),
        (b'{"v": 1, "id": 3, "job": "j"}', "malformed envelope"),
    ],
)
def test_malformed_bodies_raise_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(SerializationError, match=reason):
        decode(body)


def _body(**changes: object) -> bytes:
    data = Envelope(id="j1", job="work", args=(1,), idempotency_key="k").to_dict()
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"time_limit": "30"}, "time_limit"),
        ({"time_limit": True}, "time_limit"),
        ({"time_limit": 0}, "time_limit"),
        ({"time_limit": -1.5}, "time_limit"),
        ({"headers": ["a"]}, "headers"),
        ({"headers": {"trace": 7}}, "header 'trace'"),
        ({"idempotency_key": 42}, "idempotency_key"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"not_before": 1700000000}, "not_before"),
        ({"not_before": "tomorrow"}, "not_before"),
        ({"enqueued_at": "2026-01-01T00:00:00"}, "timezone"),
        ({"attempt": -1}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"priority": 2.5}, "priority"),
        ({"v": "1"}, "version"),
        ({"v": 0}, "version"),
    ],
)
def test_every_field_is_type_checked_at_decode(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(SerializationError, match=reason) as caught:
        decode(_body(**changes))
    assert not isinstance(caught.value, UnsupportedEnvelopeVersion)


def test_well_typed_optional_fields_decode() -> None:
    env = decode(
        _body(time_limit=30, headers={"trace": "t"}, not_before="2026-01-01T00:00:00+00:00")
    )
    assert (env.time_limit, env.headers) == (30.0, {"trace": "t"})
    assert env.not_before == datetime(2026, 1, 1, tzinfo=UTC)


def test_newer_envelope_version_is_told_apart_from_a_broken_one() -> None:
    with pytest.raises(UnsupportedEnvelopeVersion, match="newer") as caught:
        decode(_body(v=2, brand_new={"x": 1}))
    assert caught.value.version == 2


def test_salvage_reads_what_it_can_of_a_broken_body() -> None:
    found = salvage(_body(v=7, time_limit="30", not_before="2026-01-01T00:00:00+00:00"))
    assert (found.id, found.job, found.version) == ("j1", "work", 7)
    assert found.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert salvage(b"\x80 not json") == Salvage()
    assert salvage(b'{"id": 5, "enqueued_at": "garbage"}') == Salvage()


_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
_keys = st.text() | st.integers() | st.booleans()


@given(
    args=st.lists(_scalars | st.tuples(_scalars) | st.lists(_scalars), max_size=4),
    kwargs=st.dictionaries(st.text(), _scalars | st.tuples(_scalars), max_size=3),
    headers=st.dictionaries(_keys, st.text(), max_size=2),
)
def test_encode_exact_accepts_exactly_what_json_gives_back(
    args: list[Any], kwargs: dict[str, Any], headers: dict[Any, str]
) -> None:
    env = Envelope(job="j", args=tuple(args), kwargs=kwargs, headers=headers)
    try:
        back = json.loads(json.dumps(env.to_dict(), allow_nan=False))
    except ValueError:  # inf
        exact = False
    else:
        exact = back["args"] == args and back["kwargs"] == kwargs and back["headers"] == headers
    try:
        body = env.encode_exact()
    except SerializationError:
        assert not exact
    else:
        assert exact
        assert json.loads(body)["args"] == args
