"""The supervisor's batch of job events drops the STARTED events that later events of the batch
supersede; every store folds what is left into the same records as the whole batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from jobkit import JobRecord
from jobkit.spi import EventKind, JobEvent, apply_event
from jobkit.worker._settling import folded

T0 = datetime(2026, 1, 1, tzinfo=UTC)

_events = st.builds(
    lambda job_id, kind, attempt, error, key, at: JobEvent(
        job_id=job_id,
        job="j",
        kind=kind,
        attempt=attempt,
        at=T0 + timedelta(seconds=at),
        error=error,
        key=key,
        result=attempt if kind is EventKind.SUCCEEDED else None,
    ),
    job_id=st.sampled_from(["a", "b"]),
    kind=st.sampled_from(list(EventKind)),
    attempt=st.integers(1, 3),
    error=st.none() | st.just("boom"),
    key=st.none() | st.sampled_from(["k1", "k2"]),
    at=st.integers(0, 100),
)


def _records(events: list[JobEvent]) -> dict[str, JobRecord]:
    records: dict[str, JobRecord] = {}
    for event in events:
        records[event.job_id] = apply_event(records.get(event.job_id), event)
    return records


@given(st.lists(_events, max_size=12))
def test_a_folded_batch_leaves_the_records_of_the_whole_batch(events: list[JobEvent]) -> None:
    assert _records(folded(events)) == _records(events)


def test_a_job_started_and_ended_in_one_batch_is_one_event() -> None:
    started = JobEvent(job_id="a", job="j", kind=EventKind.STARTED, attempt=1, at=T0)
    ended = JobEvent(job_id="a", job="j", kind=EventKind.SUCCEEDED, attempt=1, at=T0)
    assert folded([started, ended]) == [ended]


def test_a_start_after_a_failure_in_the_same_batch_is_kept() -> None:
    events = [
        JobEvent(job_id="a", job="j", kind=EventKind.STARTED, attempt=1, at=T0),
        JobEvent(job_id="a", job="j", kind=EventKind.FAILED, attempt=1, at=T0, error="x"),
        JobEvent(job_id="a", job="j", kind=EventKind.STARTED, attempt=2, at=T0),
    ]
    assert folded(events) == events[1:]
