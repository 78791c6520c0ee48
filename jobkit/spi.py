"""The interface for adapter authors: what a backend implements and the parts it may use.

Applications import `jobkit`; adapter authors (and the conformance suite) import `jobkit.spi`
and the errors from `jobkit`. Two levels:

* the job level, `Backend`: for frameworks that own their worker (Celery). Such a backend runs
  each job with `job_context` and `invoke_job`, calls the `worker_hooks` of the app around each
  attempt (`jobkit.middleware`: ``before_run``, ``after_run`` with the outcome) and records
  outcomes as `JobEvent`s in a `JobStore` (folded with `apply_event`), deduplicating by `dedup_key`;
* the message level, `Transport`: for brokers that jobkit's own worker drives; wrap one in
  `TransportBackend` (with a `JobStore`) to get a `Backend`.

Both levels carry the migration primitives (`export_jobs` / `import_jobs` / `present_jobs` /
`commit_export` / `release_export`, and their `Transport` counterparts with generic defaults),
declared in `Capabilities.migration`; `migrate` is the engine of `jobkit migrate`.

Everything named here is stable for adapters; anything not named here is internal.
"""

from jobkit._invoke import invoke as invoke_job
from jobkit._json import check_round_trip
from jobkit.backend import Backend, WorkerOptions, unknown_job_problems
from jobkit.capabilities import Capabilities, MigrationSupport
from jobkit.capabilities import Delivery as DeliveryGuarantee
from jobkit.clock import Clock, ManualClock, SystemClock
from jobkit.config import interpolate, resolve_app_path, resolve_backend_url
from jobkit.envelope import (
    ENVELOPE_VERSION,
    Envelope,
    Salvage,
    UnsupportedEnvelopeVersion,
    decode,
    new_job_id,
    salvage,
)
from jobkit.job import JobSet
from jobkit.loading import load_app
from jobkit.markers import (
    departure_marker,
    marker_event,
    migration_marker,
    record_departures,
    stays,
)
from jobkit.markers import marked as marked_jobs
from jobkit.memory import MemoryTransport
from jobkit.migrate import Migration, migrate
from jobkit.migrate import Report as MigrationReport
from jobkit.records import DeadLetter, Delivery, ExportedJob, ImportOutcome, Message, QueueStats
from jobkit.redact import redact_url
from jobkit.registry import installed_schemes, open_backend, scheme_of
from jobkit.retention import Retention, parse_duration, pop_retention
from jobkit.sqlite import SqliteJobStore, SqliteTransport
from jobkit.store import (
    EventKind,
    JobEvent,
    JobStore,
    MemoryJobStore,
    apply_event,
    dedup_key,
)
from jobkit.transport import Transport, fold_attempts, message_of
from jobkit.transport_backend import TransportBackend, replay_body
from jobkit.worker._observe import worker_hooks
from jobkit.worker._retrying import Retrier, Stopped
from jobkit.worker.context import job_context
from jobkit.worker.supervisor import Worker

__all__ = [
    "ENVELOPE_VERSION",
    "Backend",
    "Capabilities",
    "Clock",
    "DeadLetter",
    "Delivery",
    "DeliveryGuarantee",
    "Envelope",
    "EventKind",
    "ExportedJob",
    "ImportOutcome",
    "JobEvent",
    "JobSet",
    "JobStore",
    "ManualClock",
    "MemoryJobStore",
    "MemoryTransport",
    "Message",
    "Migration",
    "MigrationReport",
    "MigrationSupport",
    "QueueStats",
    "Retention",
    "Retrier",
    "Salvage",
    "SqliteJobStore",
    "SqliteTransport",
    "Stopped",
    "SystemClock",
    "Transport",
    "TransportBackend",
    "UnsupportedEnvelopeVersion",
    "Worker",
    "WorkerOptions",
    "apply_event",
    "check_round_trip",
    "decode",
    "dedup_key",
    "departure_marker",
    "fold_attempts",
    "installed_schemes",
    "interpolate",
    "invoke_job",
    "job_context",
    "load_app",
    "marked_jobs",
    "marker_event",
    "message_of",
    "migrate",
    "migration_marker",
    "new_job_id",
    "open_backend",
    "parse_duration",
    "pop_retention",
    "record_departures",
    "redact_url",
    "replay_body",
    "resolve_app_path",
    "resolve_backend_url",
    "salvage",
    "scheme_of",
    "stays",
    "unknown_job_problems",
    "worker_hooks",
]
