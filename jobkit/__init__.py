"""jobkit: one job interface, many backends, the same semantics everywhere.

This is the application API: define jobs on an `App`, enqueue them, follow them with a
`JobHandle`. Adapter authors implement and use `jobkit.spi`.
"""

from jobkit._version import __version__
from jobkit.app import App
from jobkit.errors import (
    BrokerUnavailable,
    ConfigurationError,
    JobFailed,
    JobkitError,
    JobNotFound,
    JobTimeout,
    Reject,
    Retry,
    SerializationError,
    TimeLimitExceeded,
    UnknownBackend,
    UnknownJob,
    UnsupportedFeature,
    WorkerLost,
)
from jobkit.handle import JobHandle
from jobkit.job import AsyncJobDef, BoundJob, EnqueueOptions, JobDef
from jobkit.policy import RetryPolicy
from jobkit.records import AttemptError, JobRecord, JobState
from jobkit.worker.context import JobContext, current_job

__all__ = [
    "App",
    "AsyncJobDef",
    "AttemptError",
    "BoundJob",
    "BrokerUnavailable",
    "ConfigurationError",
    "EnqueueOptions",
    "JobContext",
    "JobDef",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobTimeout",
    "JobkitError",
    "Reject",
    "Retry",
    "RetryPolicy",
    "SerializationError",
    "TimeLimitExceeded",
    "UnknownBackend",
    "UnknownJob",
    "UnsupportedFeature",
    "WorkerLost",
    "__version__",
    "current_job",
]
