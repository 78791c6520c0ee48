"""What the supervisor settles in batches: the STARTED events that later events of a batch
supersede are dropped (every store folds what is left into the same records), and what is
pending bounds how long the supervisor waits before writing it."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from jobkit import BrokerUnavailable, JobRecord
from jobkit.spi import (
    Delivery,
    EventKind,
    JobEvent,
    MemoryJobStore,
    MemoryTransport,
    SystemClock,
    TransportBackend,
    Worker,
    WorkerOptions,
    apply_event,
    open_backend,
)
from jobkit.worker._settling import FLUSH_EVERY, IDLE_FLUSH, Settling, folded
from tests.apps import ledger

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


def _settling() -> Settling:
    return Settling(MemoryJobStore(), SystemClock())


def test_nothing_pending_sets_no_deadline_for_the_supervisor() -> None:
    assert _settling().wait_at_most(time.monotonic(), idle_since=0.0) is None


def _one_ack_pending() -> Settling:
    settling = _settling()
    settling.flush(MemoryTransport())
    settling.acks.append(Delivery(queue="q", id="a", body=b"{}", deliveries=1, receipt="r"))
    return settling


def test_a_pending_ack_is_due_within_the_flush_interval_while_other_jobs_may_join_it() -> None:
    settling = _one_ack_pending()
    wait = settling.wait_at_most(time.monotonic(), idle_since=None)
    assert wait is not None
    assert 0 < wait <= FLUSH_EVERY
    assert not settling.due(idle_since=None)


def test_a_pending_ack_is_due_once_the_worker_has_held_no_job_for_a_moment() -> None:
    settling = _one_ack_pending()
    now = time.monotonic()
    wait = settling.wait_at_most(now, idle_since=now)
    assert wait is not None
    assert 0 < wait < IDLE_FLUSH + 1e-6 < FLUSH_EVERY
    assert not settling.due(idle_since=now)  # the buffer may fill again at once
    assert settling.due(idle_since=now - IDLE_FLUSH)
    assert settling.wait_at_most(now, idle_since=now - IDLE_FLUSH) == 0.0


def test_a_call_held_back_by_an_outage_is_due_at_its_next_try() -> None:
    settling = _settling()

    def down() -> None:
        raise BrokerUnavailable("away")

    settling.calls.add("ack", down)
    now = time.monotonic()
    wait = settling.wait_at_most(now, idle_since=0.0)
    assert wait is not None
    assert 0 < wait <= settling.calls.streak.next_try - now


def test_the_supervisor_waits_no_longer_than_its_pending_acks_allow() -> None:
    backend = open_backend("memory://")
    assert isinstance(backend, TransportBackend)
    options = WorkerOptions(app_path="tests.apps.ledger:app", lease=timedelta(minutes=5))
    worker = Worker(ledger.app, backend, options)
    now = time.monotonic()
    idle = worker._timeout(now, None)
    worker._settling.acks.append(Delivery(queue="q", id="a", body=b"{}", deliveries=1, receipt="r"))
    assert worker._timeout(now, None) <= FLUSH_EVERY < idle
