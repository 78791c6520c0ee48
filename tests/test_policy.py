import random
from datetime import timedelta

import pytest

from jobkit import ConfigurationError, Reject, Retry, RetryPolicy


def test_default_policy_makes_five_attempts() -> None:
    assert RetryPolicy().max_attempts == 5


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=timedelta(seconds=1), backoff_cap=timedelta(seconds=5))
    uppers = [policy.max_backoff(n).total_seconds() for n in range(1, 6)]
    assert uppers == [1, 2, 4, 5, 5]


def test_full_jitter_stays_within_zero_and_the_exponential_bound() -> None:
    policy = RetryPolicy(backoff_base=timedelta(seconds=1))
    rng = random.Random(7)
    delays = [policy.backoff(3, rng).total_seconds() for _ in range(200)]
    assert min(delays) >= 0 and max(delays) <= 4
    assert max(delays) - min(delays) > 2  # jitter really spreads


def test_partial_jitter_gives_a_lower_bound() -> None:
    policy = RetryPolicy(backoff_base=timedelta(seconds=1), jitter=0.5)
    assert policy.min_backoff(3) == timedelta(seconds=2)
    assert all(policy.backoff(3).total_seconds() >= 2 for _ in range(100))


def test_reject_and_declared_permanent_errors_are_not_transient() -> None:
    policy = RetryPolicy(permanent=(KeyError,))
    assert not policy.is_transient(Reject("no"))
    assert not policy.is_transient(KeyError("k"))
    assert policy.is_transient(TimeoutError())
    assert policy.is_transient(Retry(delay=1))


def test_retry_on_limits_which_errors_retry() -> None:
    policy = RetryPolicy(retry_on=(ConnectionError,))
    assert policy.is_transient(ConnectionError())
    assert not policy.is_transient(ValueError())


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"jitter": 1.5}])
def test_invalid_policy_is_a_configuration_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
