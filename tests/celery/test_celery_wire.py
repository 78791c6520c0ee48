"""The ``jobkit`` header of a Celery task message (no broker needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jobkit_celery._wire import display_repr, envelope_of, meta_of

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


@pytest.mark.parametrize(
    "values",
    [
        [1, "a", 2.5, None, True],
        [],
        {"order": 7, "note": "x'y\"z"},
        [1, {"k": [1, 2, {"z": [3]}]}],  # nested deeper than Celery shows
        [[[[[1]]]]],
        ["é" * 2000],  # longer than Celery's 1,024 characters
        {"long": list(range(1000))},
    ],
)
def test_display_repr_is_what_celery_would_write(values: Any) -> None:
    """Flower and ``celery inspect`` show the same ``argsrepr`` / ``kwargsrepr`` for a job sent
    by jobkit as Celery's own ``apply_async`` would have written."""
    from celery.utils.saferepr import saferepr

    assert display_repr(values) == saferepr(values, 1024)
