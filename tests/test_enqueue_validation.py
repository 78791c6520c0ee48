"""Enqueue refuses what it cannot store exactly, naming what was asked and what is allowed.

Every refusal leaves the queue empty: nothing invalid is ever sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from jobkit import App, ConfigurationError, SerializationError, UnsupportedFeature


@pytest.fixture
def app() -> Iterator[App]:
    app = App("t", backend="memory://")
    yield app
    app.close()


def ready(app: App) -> int:
    return app.backend.stats(["default"])[0].ready


def define(app: App) -> Any:
    @app.job
    def store(*args: Any, **kwargs: Any) -> None: ...

    return store


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"order": {"items": [1, 2, (3, 4)]}},
            r"kwargs\['order'\]\['items'\]\[2\]: tuple is not JSON",
        ),
        (
            {"counts": {1: "a"}},
            r'kwargs\[.counts.\]: dict key 1 \(int\) is not JSON: .* the string "1"; use str keys',
        ),
        ({"x": float("nan")}, r"kwargs\['x'\]: nan is not JSON"),
        ({"x": [float("inf")]}, r"kwargs\['x'\]\[0\]: inf is not JSON"),
        ({"tags": {"a", "b"}}, r"kwargs\['tags'\]: set is not JSON: pass a sorted list"),
        ({"blob": b"\x00"}, r"kwargs\['blob'\]: bytes is not JSON"),
        ({"at": datetime.now(UTC)}, r"kwargs\['at'\]: datetime is not JSON: pass an ISO 8601"),
        ({"day": date.today()}, r"kwargs\['day'\]: date is not JSON"),
        ({"amount": Decimal("1.10")}, r"kwargs\['amount'\]: Decimal is not JSON"),
        ({"id": uuid.uuid4()}, r"kwargs\['id'\]: UUID is not JSON"),
        ({"obj": object()}, r"kwargs\['obj'\]: object is not JSON"),
    ],
)
def test_argument_that_does_not_round_trip_raises_naming_its_path(
    app: App, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(SerializationError, match=message):
        define(app).enqueue(**kwargs)
    assert ready(app) == 0


def test_positional_tuple_argument_is_named_by_its_index(app: App) -> None:
    with pytest.raises(SerializationError, match=r"args\[1\]: tuple is not JSON: .* pass a list"):
        define(app).enqueue(1, (2, 3))


def test_exact_json_arguments_are_accepted_as_they_are(app: App) -> None:
    define(app).enqueue(1, "two", 3.5, None, True, [1, [2]], {"k": {"n": [None]}}, x=-0.0)
    assert ready(app) == 1


def test_self_referencing_argument_is_refused_not_crashing(app: App) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="refers to itself"):
        define(app).enqueue(loop)


@pytest.mark.parametrize("priority", [2.5, 3.0, True, "3"])
def test_priority_that_is_not_an_int_is_refused(app: App, priority: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"a priority is an int, 0\.\.9 on memory"):
        define(app).options(priority=priority).enqueue()
    assert ready(app) == 0


def test_priority_out_of_the_backends_range_is_unsupported(app: App) -> None:
    with pytest.raises(UnsupportedFeature, match=r"priorities 0\.\.9"):
        define(app).options(priority=-1).enqueue()


@pytest.mark.parametrize("key", [42, "", "k" * 201, b"key"])
def test_idempotency_key_must_be_a_non_empty_bounded_str(app: App, key: Any) -> None:
    with pytest.raises(ConfigurationError, match="non-empty str of at most 200 characters"):
        define(app).options(idempotency_key=key).enqueue()
    assert ready(app) == 0


def test_idempotency_key_derived_by_the_job_is_checked_too(app: App) -> None:
    @app.job(idempotency_key=lambda order: order)  # returns an int
    def charge(order: int) -> None: ...

    with pytest.raises(ConfigurationError, match=r"idempotency key 7 \(int\)"):
        charge.enqueue(7)


def test_naive_not_before_is_refused_not_assumed_utc(app: App) -> None:
    with pytest.raises(ConfigurationError, match="timezone-aware datetime"):
        define(app).options(not_before=datetime.now() + timedelta(minutes=1)).enqueue()
    assert ready(app) == 0


@pytest.mark.parametrize("delay", [timedelta(seconds=-1), 5, float("inf")])
def test_delay_must_be_a_timedelta_of_zero_or_more(app: App, delay: Any) -> None:
    with pytest.raises(ConfigurationError, match="a delay is a timedelta of zero or more"):
        define(app).options(delay=delay).enqueue()


def test_delay_past_the_calendar_is_refused(app: App) -> None:
    with pytest.raises(ConfigurationError, match="past the year 9999"):
        define(app).options(delay=timedelta.max).enqueue()


@pytest.mark.parametrize("field", ["queue", "job_id"])
def test_queue_and_job_id_must_be_non_empty_str(app: App, field: str) -> None:
    with pytest.raises(ConfigurationError, match=f"a {field} is a non-empty str"):
        define(app).options(**{field: ""}).enqueue()


def test_headers_must_map_str_to_str(app: App) -> None:
    with pytest.raises(ConfigurationError, match="headers map str names to str values"):
        define(app).options(headers={"n": 1}).enqueue()  # type: ignore[dict-item]


@pytest.mark.parametrize("limit", [timedelta(0), timedelta(seconds=-1), 5])
def test_job_time_limit_must_be_a_positive_timedelta(app: App, limit: Any) -> None:
    with pytest.raises(ConfigurationError, match="a time limit is a positive timedelta"):

        @app.job(time_limit=limit)
        def slow() -> None: ...


def test_job_default_priority_must_be_an_int(app: App) -> None:
    with pytest.raises(ConfigurationError, match=r"priority 1\.5 \(float\)"):

        @app.job(priority=1.5)  # type: ignore[arg-type]
        def urgent() -> None: ...


def test_one_invalid_call_in_a_batch_sends_none(app: App) -> None:
    store = define(app)
    with pytest.raises(SerializationError, match=r"args\[0\]"):
        store.enqueue_many([(i,) for i in range(100)] + [((1, 2),)])
    assert ready(app) == 0


def test_arguments_that_do_not_fit_are_refused_after_a_call_that_did(app: App) -> None:
    @app.job
    def add(a: int, b: int = 0) -> int:
        return a + b

    add.enqueue(1)
    add.enqueue(1, b=2)  # shapes that fit, now remembered
    with pytest.raises(
        SerializationError, match=r"job '.*add': got an unexpected keyword argument 'c'"
    ):
        add.enqueue(1, c=2)
    with pytest.raises(SerializationError, match=r"job '.*add': too many positional arguments"):
        add.enqueue(1, 2, 3)
    with pytest.raises(SerializationError, match=r"job '.*add': multiple values for argument 'a'"):
        add.enqueue(1, a=2)
    assert ready(app) == 2
