"""Celery+RabbitMQ delay buckets: a fixed set, so any process can find every delay queue."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from jobkit_celery._amqp_ops import DELAY_BUCKETS, MAX_TTL_MS, delay_ttl_ms

FORTY_NINE_DAYS_S = 49 * 86_400


@given(st.floats(min_value=0.001, max_value=FORTY_NINE_DAYS_S))
def test_a_delay_goes_to_a_bucket_never_early_and_at_most_a_sixth_late(seconds: float) -> None:
    ttl_s = delay_ttl_ms(seconds) / 1000
    assert ttl_s >= seconds
    assert ttl_s - seconds <= 1 + seconds / 6  # Capabilities.delay_rounding


@given(st.floats(min_value=3_600, max_value=FORTY_NINE_DAYS_S))
def test_a_delay_of_an_hour_or_more_is_at_most_a_twentieth_late(seconds: float) -> None:
    assert delay_ttl_ms(seconds) / 1000 - seconds <= seconds / 20


def test_the_buckets_are_few_sorted_and_within_rabbitmqs_ttl_limit() -> None:
    assert list(DELAY_BUCKETS) == sorted(set(DELAY_BUCKETS))
    assert len(DELAY_BUCKETS) < 400  # `jobkit status` asks for each by name
    assert DELAY_BUCKETS[0] == 1_000 and DELAY_BUCKETS[-1] == MAX_TTL_MS


def test_delays_below_a_minute_keep_whole_second_buckets() -> None:
    assert [delay_ttl_ms(s) for s in (0.001, 1, 1.001, 59.5)] == [1_000, 1_000, 2_000, 60_000]
