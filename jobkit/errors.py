"""The one error tree of jobkit.

Every error jobkit raises on purpose is a `JobkitError`. Messages say what was asked, what the
backend supports and what to change. Adapters translate native exceptions at their boundary with
``raise SomeJobkitError(...) from exc``.
"""

from __future__ import annotations

from datetime import timedelta


class JobkitError(Exception):
    """Root of every error jobkit raises on purpose."""


class ConfigurationError(JobkitError):
    """The configuration (URL, TOML file, options) is invalid or incomplete."""


class UnknownBackend(ConfigurationError):
    """A backend URL names a scheme that no installed distribution provides."""


class UnsupportedFeature(JobkitError):
    """The configured backend cannot honour what was asked. Raised at enqueue, never later."""

    def __init__(self, *, asked: str, supported: str, change: str) -> None:
        self.asked = asked
        self.supported = supported
        self.change = change
        super().__init__(f"{asked}: {supported}. {change}")


class SerializationError(JobkitError):
    """A job argument or result is not JSON, or a message body does not decode."""


class BrokerUnavailable(JobkitError):
    """The broker could not be reached; nothing was sent (enqueue raises, never drops)."""


class JobNotFound(JobkitError):
    """No job with that id is known to the backend."""


class JobTimeout(JobkitError):
    """`JobHandle.result(timeout=...)` waited past its deadline."""


class JobFailed(JobkitError):
    """The job ended in the dead-letter queue; `result()` cannot return a value."""


class UnknownJob(JobkitError):
    """A message names a job that the worker's application does not define."""


class TimeLimitExceeded(JobkitError):
    """A job ran past its time limit and was stopped; it counts as a failed attempt."""


class WorkerLost(JobkitError):
    """The process running a job died before reporting; it counts as a failed attempt."""


# Raised by job code to steer the outcome of the current attempt.


class Retry(JobkitError):
    """Raise in a job to ask for another attempt, optionally after `delay`.

    It counts as a failed attempt: when the policy's max attempts are used up, the job goes to
    the dead-letter queue instead.
    """

    def __init__(
        self, reason: str = "retry requested", *, delay: timedelta | float | None = None
    ) -> None:
        self.reason = reason
        self.delay = timedelta(seconds=delay) if isinstance(delay, int | float) else delay
        super().__init__(reason)


class Reject(JobkitError):
    """Raise in a job to fail permanently: no more attempts, straight to the dead-letter queue."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
