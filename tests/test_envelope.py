from datetime import UTC, datetime

import pytest

from jobkit import SerializationError
from jobkit.spi import Envelope, decode


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
