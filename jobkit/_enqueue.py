"""Turn one call into a validated envelope and its bytes: the one place enqueue checks input.

Everything stored is checked before anything is sent: the arguments (exact JSON, see
`jobkit._json`), priority, idempotency key, job id, queue, headers, delay and not_before, and
then the backend's capabilities. Each refusal is a `JobkitError` naming what was asked, what is
allowed and what to change. Hot path: one encode, one decode and compare per call, in C.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from jobkit.capabilities import Capabilities
from jobkit.envelope import Envelope, new_job_id
from jobkit.errors import ConfigurationError, SerializationError
from jobkit.job import EnqueueOptions, JobDef

MAX_KEY_LENGTH = 200
"""Longest idempotency key, job id or queue name accepted (brokers cap ids and names)."""


def refuse(job: str, asked: str, allowed: str, change: str) -> ConfigurationError:
    return ConfigurationError(f"job {job!r}: {asked}; {allowed}. {change}")


def prepare(
    job: JobDef[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    opts: EnqueueOptions,
    *,
    now: datetime,
    caps: Capabilities,
) -> tuple[Envelope, bytes]:
    """The envelope for one call and its exact JSON bytes. Raises; never sends. Thread-safe."""
    try:
        job.check_arguments(args, kwargs)
    except TypeError as exc:
        raise SerializationError(f"job {job.name!r}: {exc}") from exc
    not_before = _not_before(job.name, opts, now)
    key = opts.idempotency_key
    if key is None and job.idempotency_key is not None:
        key = job.idempotency_key(*args, **kwargs)
    priority = job.priority if opts.priority is None else opts.priority
    check_priority(job.name, priority, caps)
    env = Envelope(
        id=new_job_id() if opts.job_id is None else _name(job.name, "job_id", opts.job_id),
        job=job.name,
        args=tuple(args),
        kwargs=dict(kwargs),
        queue=job.queue if opts.queue is None else _name(job.name, "queue", opts.queue),
        max_attempts=job.retry.max_attempts,
        enqueued_at=now,
        not_before=not_before,
        priority=priority,
        idempotency_key=None if key is None else _name(job.name, "idempotency key", key),
        time_limit=job.time_limit.total_seconds() if job.time_limit else None,
        headers=_headers(job.name, opts.headers),
    )
    body = env.encode_exact()
    delay = not_before - now if not_before is not None else timedelta(0)
    caps.check(env, len(body), now_delay=delay)
    return env, body


def check_priority(job: str, priority: object, caps: Capabilities | None = None) -> None:
    """Refuse a priority that is not an int (bool and float included); the range is the
    backend's (`Capabilities.check`)."""
    if type(priority) is not int:
        levels = f"0..{caps.priorities - 1} on {caps.name}" if caps else "0..9 on most backends"
        raise refuse(
            job,
            f"priority {priority!r} ({type(priority).__name__}) was asked",
            f"a priority is an int, {levels}, higher runs first",
            "Pass an int",
        )


def _not_before(job: str, opts: EnqueueOptions, now: datetime) -> datetime | None:
    if opts.delay is not None and opts.not_before is not None:
        raise refuse(
            job,
            "both delay and not_before were asked",
            "one of them says when the job may start",
            "Pass either delay or not_before",
        )
    if opts.delay is not None:
        if not isinstance(opts.delay, timedelta) or opts.delay < timedelta(0):
            raise refuse(
                job,
                f"delay {opts.delay!r} was asked",
                "a delay is a timedelta of zero or more",
                "Pass for example delay=timedelta(seconds=30)",
            )
        try:
            return now + opts.delay if opts.delay > timedelta(0) else None
        except OverflowError as exc:
            raise refuse(
                job,
                f"delay {opts.delay} was asked",
                "it ends past the year 9999",
                "Pass a shorter delay",
            ) from exc
    when = opts.not_before
    if when is None:
        return None
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise refuse(
            job,
            f"not_before {when!r} was asked",
            "not_before is a timezone-aware datetime (a naive one is ambiguous)",
            "Pass for example datetime.now(UTC) + timedelta(minutes=5)",
        )
    return when


def _name(job: str, what: str, value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_LENGTH:
        shown = f"{value!r}" if not isinstance(value, str) else f"of {len(value)} characters"
        raise refuse(
            job,
            f"{what} {shown} ({type(value).__name__}) was asked",
            f"{'an' if what[0] in 'aeiou' else 'a'} {what} is a non-empty str of at most "
            f"{MAX_KEY_LENGTH} characters",
            f"Pass a str of 1 to {MAX_KEY_LENGTH} characters",
        )
    return value


def _headers(job: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise refuse(
            job,
            f"headers {headers!r} were asked",
            "headers map str names to str values",
            "Convert the names and values to str",
        )
    return dict(headers)
