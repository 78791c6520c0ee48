"""The migration checker: every job seeded before two migrations there and back is at the
backend again exactly once, by id, with its state (see `harness.migration`)."""

from __future__ import annotations

from typing import Any

from jobkit_conformance.checkers._base import Finding, _finding
from jobkit_conformance.history import F, History, OpType

DELAY_TOLERANCE = 2.0
"""Seconds a delay may drift across two migrations (clock reads, one poll interval)."""


def migration_exact(history: History) -> Finding:
    """Each seeded job present once, with the same envelope (args, headers, key, priority, time
    limit...), the same attempts used, the same due time (within `DELAY_TOLERANCE`), and dead
    letters dead with their reason; every migration's report exact (exit 0, all accounted)."""
    ops = history.select(f=F.MIGRATE, type=OpType.OK)
    if not ops:
        return Finding(passed=False, summary="no migration was recorded")
    value = ops[-1].value
    expected: dict[str, dict[str, Any]] = value["expected"]
    found: dict[str, list[dict[str, Any]]] = value["found"]
    problems = [
        f"job {job_id} is missing after the migrations there and back"
        for job_id in expected
        if job_id not in found
    ]
    problems += [f"job {job_id} was not seeded but came back" for job_id in found.keys() - expected]
    kills = [
        op for op in history.select(f=F.KILL) if op.value.get("migrator") and op.value.get("killed")
    ]
    # Declared (`MigrationSupport.killed_export_counts`): a job the killed migrator held may
    # come back with one attempt more; at most one batch per kill.
    allowed = int(value.get("batch", 0)) * len(kills) if value.get("killed_export_counts") else 0
    recounted = []
    for job_id, want in expected.items():
        copies = found.get(job_id, [])
        if len(copies) > 1:
            problems.append(f"job {job_id} is present {len(copies)} times")
        if not copies:
            continue
        got = copies[0]
        if allowed and not want["dead"] and got["attempts"] == want["attempts"] + 1:
            recounted.append(job_id)
            got = {**got, "attempts": want["attempts"]}
        problems += _differences(job_id, want, got)
    if len(recounted) > allowed:
        problems.append(
            f"{len(recounted)} jobs came back with one attempt more; the killed migrator "
            f"held at most {allowed}"
        )
    for report in value.get("reports", []):
        if report.get("exit_code") != 0 or not report.get("ok"):
            problems.append(f"a migration did not account for every job: {report}")
    counts = {
        "jobs": float(len(expected)),
        "migrator_kills": float(len(kills)),
        "recounted": float(len(recounted)),
    }
    summary = f"all {len(expected)} jobs back once with their state"
    if recounted:
        summary += (
            f" ({len(recounted)} held by the killed migrator with one attempt more, as declared)"
        )
    return _finding(problems, summary, counts, "differences")


def _differences(job_id: str, want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    problems = []
    if got["body"] != want["body"]:
        problems.append(f"job {job_id}: envelope changed from {want['body']} to {got['body']}")
    if got["attempts"] != want["attempts"]:
        problems.append(f"job {job_id}: {got['attempts']} attempts used, not {want['attempts']}")
    if got["dead"] != want["dead"]:
        problems.append(f"job {job_id}: dead-letter reason {got['dead']!r}, not {want['dead']!r}")
    if (want["due"] is None) != (got["due"] is None):
        problems.append(f"job {job_id}: due {got['due']}, expected {want['due']}")
    elif want["due"] is not None and abs(got["due"] - want["due"]) > DELAY_TOLERANCE:
        problems.append(
            f"job {job_id}: due {got['due'] - want['due']:+.1f} s off its time after migrating"
        )
    return problems
