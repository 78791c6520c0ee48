"""Migration markers per stay (`jobkit.markers`): an import run again skips what it sent; a job
that left and comes back is sent again, never taken for a copy."""

from __future__ import annotations

from datetime import UTC, datetime

from jobkit.markers import marked, marker_event, record_departures, stays
from jobkit.store import MemoryJobStore

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _import(store: MemoryJobStore, ids: list[str]) -> set[str]:
    """What an import does: skip the marked ids, mark the rest; returns the ids it would send."""
    current = stays(store, ids)
    fresh = set(ids) - marked(store, ids, current)
    store.record([marker_event(i, "job", NOW, current[i]) for i in sorted(fresh)])
    return fresh


def test_an_import_run_again_skips_the_jobs_it_marked() -> None:
    store = MemoryJobStore()
    assert _import(store, ["a", "b"]) == {"a", "b"}
    assert _import(store, ["a", "b", "c"]) == {"c"}


def test_a_job_that_left_is_sent_again_when_it_comes_back() -> None:
    store = MemoryJobStore()
    _import(store, ["a", "b"])
    record_departures(store, ["a"], NOW)
    assert marked(store, ["a", "b"]) == {"b"}
    assert _import(store, ["a", "b"]) == {"a"}
    assert marked(store, ["a", "b"]) == {"a", "b"}


def test_each_departure_starts_a_new_stay() -> None:
    store = MemoryJobStore()
    for stay in range(3):
        assert stays(store, ["a"]) == {"a": stay}
        assert _import(store, ["a"]) == {"a"}
        record_departures(store, ["a"], NOW)
    assert stays(store, ["a", "never-here"]) == {"a": 3, "never-here": 0}


def test_the_first_stay_keeps_the_marker_name_of_earlier_versions() -> None:
    store = MemoryJobStore()
    store.record([marker_event("a", "job", NOW)])  # as written before stays existed
    assert marked(store, ["a"]) == {"a"}
