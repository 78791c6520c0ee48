"""Retry policy: how many attempts, how long between them, which errors retry.

Defaults and their reasons:

* ``max_attempts=5`` attempts in total (the first run plus 4 retries). Enough to ride out a
  broker fail-over or a deploy; few enough that a broken job reaches the dead-letter queue within
  minutes, not Dramatiq's default of weeks.
* ``backoff_base=1 s``, doubling, capped at ``backoff_cap=10 min``: retries 1..4 wait up to
  1, 2, 4, 8 s.
* ``jitter=1.0`` is *full jitter* (the delay is uniform in ``[0, exp]``): it spreads a herd of
  failing jobs best. Lower it (e.g. 0.5, uniform in ``[exp/2, exp]``) when a lower bound on the
  wait matters more than spreading.
* Every ``Exception`` is transient (retried) except those in ``permanent``, `Reject`, and the
  errors that can never succeed on retry: an undecodable message, an unknown job name, and
  arguments that do not fit the job's signature.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from jobkit.errors import ConfigurationError, Reject, Retry


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_base: timedelta = timedelta(seconds=1)
    backoff_cap: timedelta = timedelta(minutes=10)
    jitter: float = 1.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    permanent: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"max_attempts={self.max_attempts}: a job needs at least 1 attempt; "
                "use max_attempts=1 for no retries"
            )
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigurationError(f"jitter={self.jitter}: must be between 0.0 and 1.0")
        if self.backoff_base < timedelta(0) or self.backoff_cap < timedelta(0):
            raise ConfigurationError("backoff_base and backoff_cap must not be negative")

    def is_transient(self, exc: BaseException) -> bool:
        """True if `exc` may succeed on another attempt."""
        if isinstance(exc, Retry):
            return True
        if isinstance(exc, (Reject, self.permanent)):
            return False
        return isinstance(exc, self.retry_on)

    def backoff(self, attempt: int, rng: random.Random | None = None) -> timedelta:
        """The wait before the attempt after failed attempt number `attempt` (1-based)."""
        exp = min(
            self.backoff_cap.total_seconds(),
            self.backoff_base.total_seconds() * (2 ** max(0, attempt - 1)),
        )
        low = exp * (1.0 - self.jitter)
        return timedelta(seconds=(rng or random).uniform(low, exp))

    def max_backoff(self, attempt: int) -> timedelta:
        """The upper bound of `backoff(attempt)`."""
        return self.backoff(attempt, _Upper())

    def min_backoff(self, attempt: int) -> timedelta:
        """The lower bound of `backoff(attempt)`."""
        return self.backoff(attempt, _Lower())


class _Upper(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


class _Lower(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


DEFAULT_POLICY = RetryPolicy()
