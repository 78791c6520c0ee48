"""The ``jobkit`` header of a Celery task message (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobkit_celery._wire import envelope_of, meta_of

from jobkit.spi import Envelope


def _read(env: Envelope, meta: dict[str, Any]) -> Envelope:
    return envelope_of(
        task_id=env.id, name=env.job, args=list(env.args), kwargs=env.kwargs, meta=meta,
        queue="routing-key",
    )  # fmt: skip


def test_the_header_leaves_out_optional_fields_that_are_unset() -> None:
    meta = meta_of(Envelope(job="j", queue="q"))
    assert set(meta) == {"v", "queue", "attempt", "max_attempts", "enqueued_at", "priority"}


def test_a_header_with_every_field_set_reads_back_the_same_envelope() -> None:
    now = datetime.now(UTC)
    env = Envelope(
        job="j", args=(1, "a"), kwargs={"k": [1]}, queue="q", attempt=2, max_attempts=4,
        enqueued_at=now, not_before=now + timedelta(seconds=5), priority=7,
        idempotency_key="order-1", time_limit=2.5, headers={"trace": "abc"},
    )  # fmt: skip
    assert _read(env, meta_of(env)) == env


def test_a_header_written_with_null_optional_fields_reads_as_the_short_one() -> None:
    """Messages from jobkit versions that wrote every field (null when unset) still run."""
    env = Envelope(job="j", args=(1,), queue="q")
    written_before = {
        **meta_of(env), "not_before": None, "idempotency_key": None, "time_limit": None,
        "headers": {},
    }  # fmt: skip
    assert _read(env, written_before) == _read(env, meta_of(env)) == env
