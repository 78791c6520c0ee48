"""The migration checker on hand-written histories: every seeded job back once with its state."""

from __future__ import annotations

from typing import Any

from jobkit_conformance.checkers import migration_exact
from jobkit_conformance.history import F, OpType

from tests.conformance.histories import H

REPORT_OK = {"ok": True, "exit_code": 0}


def job(body: str = "a", attempts: int = 0, due: float | None = None, dead: str | None = None):  # type: ignore[no-untyped-def]
    return {"body": {"args": [body]}, "attempts": attempts, "due": due, "dead": dead}


def history(
    expected: dict[str, Any], found: dict[str, list[Any]], reports: list[Any], **declared: Any
) -> H:
    return H().op(
        "migrator",
        OpType.OK,
        F.MIGRATE,
        1.0,
        expected=expected,
        found=found,
        reports=reports,
        **declared,
    )


def killed_once(h: H) -> H:
    return h.op("nemesis", OpType.OK, F.KILL, 0.5, migrator=True, killed=True)


def test_passes_when_every_job_is_back_once_with_its_state() -> None:
    expected = {"r": job(attempts=2), "d": job(due=600.0), "x": job(attempts=1, dead="boom")}
    found = {"r": [job(attempts=2)], "d": [job(due=601.5)], "x": [job(attempts=1, dead="boom")]}
    finding = migration_exact(history(expected, found, [REPORT_OK, REPORT_OK]).history)
    assert finding.passed, finding.summary


def test_names_a_lost_a_duplicated_and_a_changed_job() -> None:
    expected = {"lost": job(), "twice": job(), "changed": job(attempts=1)}
    found = {"twice": [job(), job()], "changed": [job(attempts=2)]}
    finding = migration_exact(history(expected, found, [REPORT_OK]).history)
    assert not finding.passed
    text = "\n".join(finding.details)
    assert "lost is missing" in text and "twice is present 2 times" in text
    assert "changed: 2 attempts used, not 1" in text


def test_fails_a_delay_that_drifted_and_a_report_that_did_not_account() -> None:
    expected = {"d": job(due=600.0)}
    finding = migration_exact(
        history(expected, {"d": [job(due=0.0)]}, [{"ok": False, "exit_code": 1}]).history
    )
    assert not finding.passed
    assert any("off its time" in d for d in finding.details)
    assert any("did not account" in d for d in finding.details)


def test_fails_without_a_recorded_migration() -> None:
    assert not migration_exact(H().history).passed


def test_an_attempt_more_on_jobs_the_killed_migrator_held_passes_only_where_declared() -> None:
    expected = {"a": job(), "b": job(attempts=1), "c": job()}
    found = {"a": [job(attempts=1)], "b": [job(attempts=2)], "c": [job()]}
    declared = {"batch": 3, "killed_export_counts": True}
    finding = migration_exact(
        killed_once(history(expected, found, [REPORT_OK], **declared)).history
    )
    assert finding.passed, finding.details
    assert finding.counts["recounted"] == 2
    undeclared = killed_once(history(expected, found, [REPORT_OK], batch=3))
    assert not migration_exact(undeclared.history).passed


def test_more_jobs_with_an_attempt_more_than_the_killed_migrator_held_fail() -> None:
    expected = {n: job() for n in "abcd"}
    found = {n: [job(attempts=1)] for n in "abcd"}
    declared = {"batch": 3, "killed_export_counts": True}
    finding = migration_exact(
        killed_once(history(expected, found, [REPORT_OK], **declared)).history
    )
    assert not finding.passed
    assert any("4 jobs came back with one attempt more" in d for d in finding.details)


def test_an_attempt_more_without_a_kill_fails_even_where_declared() -> None:
    declared = {"batch": 3, "killed_export_counts": True}
    h = history({"a": job()}, {"a": [job(attempts=1)]}, [REPORT_OK], **declared)
    assert not migration_exact(h.history).passed
