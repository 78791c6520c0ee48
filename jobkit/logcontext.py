"""Log records that say which job they are about, as text or as JSON lines.

`JobFields` is a `logging.Filter` that adds the running job's fields (from `current_job()`, a
context variable, so it works in job code's own log lines as well as jobkit's) to every record
that passes through the handler it is attached to:

===============  ============================================================
attribute        value (None outside a job)
===============  ============================================================
``job_id``       the job's id
``job_name``     the job's name
``queue``        the queue it came from
``attempt``      the attempt number, 1-based
``job_fields``   `` job=NAME id=ID queue=Q attempt=N`` for text formats, or ""
===============  ============================================================

`JsonFormatter` writes one JSON object per line with those fields (for log shippers).
`configure_logging` sets up the root logger of a jobkit process (the CLI, its job processes).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Literal

from jobkit.envelope import Envelope
from jobkit.worker.context import current_job

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]%(job_fields)s: %(message)s"
JOB_ATTRIBUTES = ("job_id", "job_name", "queue", "attempt")


class JobFields(logging.Filter):
    """Adds ``job_id``, ``job_name``, ``queue``, ``attempt`` and ``job_fields`` to each record
    (see the module docstring). Never drops a record. Thread-safe."""

    def filter(self, record: logging.LogRecord) -> bool:
        given = getattr(record, "job_id", None)
        if given is not None:  # set already (by an `extra=`)
            if not hasattr(record, "job_fields"):
                record.job_fields = f" id={given}"
            return True
        job = current_job()
        record.job_id = job.id if job else None
        record.job_name = job.job if job else None
        record.queue = job.queue if job else None
        record.attempt = job.attempt if job else None
        record.job_fields = (
            f" job={job.job} id={job.id} queue={job.queue} attempt={job.attempt}" if job else ""
        )
        return True


def job_fields(envelope: Envelope, attempt: int) -> dict[str, object]:
    """The job fields of a record about `envelope`'s attempt logged outside the job (by the
    worker's main process), as ``extra=`` for a logging call."""
    return {
        "job_id": envelope.id,
        "job_name": envelope.job,
        "queue": envelope.queue,
        "attempt": attempt,
        "job_fields": f" job={envelope.job} id={envelope.id} queue={envelope.queue} "
        f"attempt={attempt}",
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, pid, message, the job
    fields of `JobFields` (when set), and ``exc_info`` as text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in JOB_ATTRIBUTES:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(*, verbose: bool = False, log_format: LogFormat = "text") -> None:
    """Configure the root logger of this process once (replacing earlier handlers): jobkit's
    loggers (``jobkit.*``, adapters' ``jobkit.<name>``) at INFO, every other library at
    WARNING; with `verbose`, everything at DEBUG. Records carry the job fields (`JobFields`)."""
    handler = logging.StreamHandler()
    handler.addFilter(JobFields())
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True
    )
    logging.getLogger("jobkit").setLevel(logging.DEBUG if verbose else logging.INFO)
