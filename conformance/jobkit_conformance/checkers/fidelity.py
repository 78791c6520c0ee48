"""Payload fidelity: a job receives what was enqueued, the handle returns what the job returned,
job by job, naming the job and the first paths that differ."""

from __future__ import annotations

import json

from jobkit_conformance.checkers._base import Finding, _accepted, _finding
from jobkit_conformance.history import F, History, Op, OpType
from jobkit_conformance.payloads import differences, fingerprint
from jobkit_conformance.views import jobs

PAYLOAD = "payload:"


def _shown(paths: list[str], root: str = "args") -> str:
    return "; ".join(p.replace("$", root, 1) for p in paths)


def payload_intact(history: History) -> Finding:
    """Each payload job received exactly the arguments it was enqueued with (after its token),
    and its handle's ``result()`` is exactly what the job returned; a message over the declared
    size limit is refused at enqueue, one within it is not."""
    received: dict[str, list[Op]] = {}
    for op in history.select(f=F.RECEIVED, type=OpType.OK):
        received.setdefault(op.job_id or "", []).append(op)
    results = {op.job_id: op for op in history.select(f=F.RESULT, type=OpType.OK)}
    problems: list[str] = []
    checked = 0
    for v in jobs(history).values():
        if not v.spec.kind.startswith(PAYLOAD):
            continue
        label = v.spec.kind[len(PAYLOAD) :]
        if v.spec.feature == "max_message_bytes":
            if v.enqueued is not OpType.FAIL or v.enqueue_error != "UnsupportedFeature":
                problems.append(
                    f"job {v.job_id}, over the backend's declared max_message_bytes, was not "
                    f"refused with UnsupportedFeature at enqueue (enqueue: {v.enqueued}, "
                    f"{v.enqueue_error or 'no error'})"
                )
            continue
        if v.enqueued is not OpType.OK:
            problems.append(
                f"job {v.job_id} ({label}) was refused at enqueue: {v.enqueue_error}; it is "
                "within the backend's declared limits"
            )
            continue
        checked += 1
        expected = fingerprint(list(v.spec.args[1:]))
        seen = received.get(v.job_id, [])
        if not seen:
            problems.append(
                f"job {v.job_id} ({label}) never reported what it received "
                f"({len(v.runs)} run(s), {'dead-lettered' if v.dead else 'not dead-lettered'})"
            )
        for op in seen:
            diff = differences(expected, op.value.get("received", {}))
            if diff:
                problems.append(
                    f"job {v.job_id} ({label}) received other arguments than were enqueued: "
                    + _shown(diff)
                )
        result = results.get(v.job_id)
        if result is None or not seen:
            continue
        returned = seen[-1].value.get("returned", {})
        if "fingerprint" not in result.value:
            problems.append(
                f"handle.result() of job {v.job_id} ({label}), which succeeded, did not return: "
                f"{result.value.get('error')} (state {result.value.get('state')})"
            )
            continue
        diff = differences(returned, result.value["fingerprint"])
        if diff:
            problems.append(
                f"handle.result() of job {v.job_id} ({label}) is not what the job returned: "
                + _shown(diff, "result")
            )
    if checked == 0:
        return Finding(passed=False, summary="no payload job was accepted")
    accepted = {v.job_id for v in _accepted(history) if v.spec.kind.startswith(PAYLOAD)}
    counts: dict[str, float] = {
        "jobs": checked,
        "results_checked": len(accepted & set(results)),
        "largest_args_bytes": max(
            (len(json.dumps(v.spec.args)) for v in _accepted(history) if v.job_id in accepted),
            default=0,
        ),
    }
    return _finding(
        problems,
        f"{checked} payload job(s) received what was enqueued; {len(accepted & set(results))} "
        "result(s) returned intact",
        counts,
        "payload anomalies",
    )
