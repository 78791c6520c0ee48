"""jobkit: one job interface, many backends, the same semantics everywhere."""

from jobkit.app import App
from jobkit.backend import Backend, WorkerOptions
from jobkit.capabilities import Capabilities
from jobkit.clock import Clock, ManualClock, SystemClock
from jobkit.config import resolve_app_path, resolve_backend_url
from jobkit.envelope import ENVELOPE_VERSION, Envelope, decode
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
from jobkit.job import EnqueueOptions, JobDef
from jobkit.loading import load_app
from jobkit.policy import RetryPolicy
from jobkit.records import (
    AttemptError,
    DeadLetter,
    Delivery,
    JobRecord,
    JobState,
    Message,
    QueueStats,
)
from jobkit.redact import redact_url
from jobkit.registry import open_backend
from jobkit.sqlite import SqliteJobStore, SqliteTransport
from jobkit.store import EventKind, JobEvent, JobStore, MemoryJobStore, apply_event, dedup_key
from jobkit.transport import Transport
from jobkit.transport_backend import TransportBackend, replay_body
from jobkit.worker import JobContext, current_job, job_context

__version__ = "0.1.0"

__all__ = [
    "ENVELOPE_VERSION",
    "App",
    "AttemptError",
    "Backend",
    "BrokerUnavailable",
    "Capabilities",
    "Clock",
    "ConfigurationError",
    "DeadLetter",
    "Delivery",
    "EnqueueOptions",
    "Envelope",
    "EventKind",
    "JobContext",
    "JobDef",
    "JobEvent",
    "JobFailed",
    "JobHandle",
    "JobNotFound",
    "JobRecord",
    "JobState",
    "JobStore",
    "JobTimeout",
    "JobkitError",
    "ManualClock",
    "MemoryJobStore",
    "Message",
    "QueueStats",
    "Reject",
    "Retry",
    "RetryPolicy",
    "SerializationError",
    "SqliteJobStore",
    "SqliteTransport",
    "SystemClock",
    "TimeLimitExceeded",
    "Transport",
    "TransportBackend",
    "UnknownBackend",
    "UnknownJob",
    "UnsupportedFeature",
    "WorkerLost",
    "WorkerOptions",
    "apply_event",
    "current_job",
    "decode",
    "dedup_key",
    "job_context",
    "load_app",
    "open_backend",
    "redact_url",
    "replay_body",
    "resolve_app_path",
    "resolve_backend_url",
]
