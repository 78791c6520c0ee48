"""Poison variants (`harness/poison_variants.py`): each unrunnable message ends where the core's
policy says, the worker keeps serving, the handle tells the truth."""

from __future__ import annotations

from jobkit_conformance.checkers._base import TOLERANCE, Finding, _accepted, _finding
from jobkit_conformance.history import F, History, Op, OpType
from jobkit_conformance.views import dead_entries, runs

_STATE = {"dead": "dead", "wait": "dead", "run": "succeeded"}


def _early(history: History) -> Op | None:
    found = [op for op in history.select(f=F.DEAD, type=OpType.OK) if "early" in op.value]
    return found[0] if found else None


def poison_variants_handled(history: History) -> Finding:
    """Wrong-typed envelopes and undecodable bytes are dead-lettered with a reason and never
    run; a newer envelope version waits (is not dead-lettered before the unknown-job timeout)
    and is dead-lettered after it; an unknown job name waits for the worker that knows it and
    runs there once, as its first attempt; every handle reports where its job ended; jobs sent
    around the poison run."""
    injects = [op for op in history.select(f=F.INJECT, type=OpType.OK) if "variant" in op.value]
    if not injects:
        return Finding(passed=False, summary="no poison variant was sent")
    final = {str(e.get("id")): e for e in dead_entries(history)}
    early = _early(history)
    early_ids = {str(e.get("id")) for e in early.value.get("entries", [])} if early else set()
    timeout = float(early.value["early"]) if early else 0.0
    all_runs = runs(history)
    results = {op.job_id: op.value for op in history.select(f=F.RESULT, type=OpType.OK)}
    problems: list[str] = []
    exits = [op.time for op in history.select(f=F.WORKER, type=OpType.OK) if op.value.get("exited")]
    old_exit = min(exits) if exits else None
    handover_untested = 0
    for op in injects:
        job_id = op.job_id or ""
        variant, expect = op.value["variant"], op.value["expect"]
        ran = all_runs.get(job_id, [])
        entry = final.get(job_id)
        what = f"message {job_id} ({variant})"
        if expect in ("dead", "wait"):
            if ran:
                problems.append(f"{what} ran {len(ran)} time(s); it cannot run")
            if entry is None:
                problems.append(f"{what} is not in the dead-letter queue at the end")
            elif not entry.get("reason"):
                problems.append(f"{what} is in the dead-letter queue without a reason")
        if expect in ("wait", "run") and early is not None and job_id in early_ids:
            # the worker measures the wait from the envelope's enqueued_at ("since")
            waited = early.time - float(op.value.get("since", op.time))
            if waited < timeout - TOLERANCE:
                problems.append(
                    f"{what} was dead-lettered within {waited:.1f} s, before the worker's "
                    f"unknown-job timeout of {timeout:g} s: it was not released for a worker "
                    "that knows it"
                )
        if expect == "run":
            since = float(op.value.get("since", op.time))
            if entry is not None and old_exit is not None and old_exit > since + timeout:
                handover_untested += 1  # the old worker outlived the timeout: its call
                continue
            if entry is not None:
                problems.append(
                    f"{what} was dead-lettered ({entry.get('reason')}) although a worker that "
                    "defines the job was started"
                )
            if len(ran) != 1 or ran[0].outcome != "ok":
                problems.append(
                    f"{what} ran {len(ran)} time(s) ({', '.join(r.outcome for r in ran) or '-'})"
                    "; the worker that defines it should run it once"
                )
            worker_attempt = _worker_attempt(history, job_id)
            if worker_attempt is not None and worker_attempt != 1:
                problems.append(
                    f"{what} ran as attempt {worker_attempt}: the releases by the worker that "
                    "did not know it were counted as attempts"
                )
        seen = results.get(job_id)
        if seen is not None and not op.value.get("raw"):
            state = seen.get("state")
            if state != _STATE[expect]:
                problems.append(
                    f"the handle of {what} reports {state!r}"
                    + (f" ({seen['error']})" if seen.get("error") else "")
                    + f"; the job is {'in the dead-letter queue' if entry else 'not dead-lettered'}"
                    f"{' and ran' if ran and ran[0].outcome == 'ok' else ''}"
                )
    alive = [op for op in history.select(f=F.WORKER, type=OpType.OK) if op.process == "probe"]
    if any(not op.value.get("alive", True) for op in alive):
        problems.append("the worker process died after receiving the poison")
    first = min(op.time for op in injects)
    after = [v for v in _accepted(history) if v.enqueue_time >= first]
    stuck = [v.job_id for v in after if not v.succeeded]
    if stuck:
        problems.append(f"{len(stuck)} job(s) sent after the poison never ran: {stuck[0]}")
    refused = [op for op in history.select(f=F.INJECT, type=OpType.FAIL) if "variant" in op.value]
    return _finding(
        problems,
        f"{len(injects)} poison variant(s) ended as the policy says; the workers kept serving"
        + (f" ({len(refused)} more refused by the backend's producer)" if refused else "")
        + (
            "; the old worker outlived the unknown-job timeout, so the hand-over to the new "
            "worker was not tested"
            if handover_untested
            else ""
        ),
        {
            "variants": len(injects),
            "refused_by_producer": len(refused),
            "handover_untested": handover_untested,
        },
        "poison anomalies",
    )


def _worker_attempt(history: History, job_id: str) -> int | None:
    for op in history.select(f=F.RUN, type=OpType.INVOKE, job_id=job_id):
        value = op.value.get("worker_attempt")
        if isinstance(value, int):
            return value
    return None
