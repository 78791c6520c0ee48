"""The poison variants scenario: messages a worker cannot run, sent by the backend's own
producer (`Backend.send`, below the App's validation, as an older or foreign producer would)
or, for bytes that are no envelope at all, by the native client.

The core's policy (issue 9): what can never run (undecodable, wrong-typed envelope fields)
goes to the dead-letter queue with a reason, and the handle reports it DEAD; a job name the
worker does not define, or a newer envelope version, is released uncounted for a worker that
knows it, and dead-lettered only after the worker's unknown-job timeout (`UNKNOWN_TIMEOUT` here;
`IN_PROCESS_TIMEOUT` where there is no rolling deploy to wait for).

The scenario plays a rolling deploy: an "old" worker sees everything first; after a while it
is replaced by a "new code" worker that defines `conformance.new_code`, which must then run
that job once, as its first attempt. Throughout, the workers keep serving a normal job.
"""

from __future__ import annotations

import json
from typing import Any

from jobkit.spi import Envelope, TransportBackend
from jobkit_conformance import contract_jobs, jobs
from jobkit_conformance.history import F, JobSpec, OpType

from .context import Context
from .fidelity import observe_result
from .settings import ScenarioFailed

UNKNOWN_TIMEOUT = 10.0
"""The workers' unknown-job timeout in this scenario, seconds: long enough for the old worker to
exit before the unknown job comes back (the worker offers it again when it times out)."""
IN_PROCESS_TIMEOUT = 4.0


def _variants(ctx: Context) -> list[tuple[str, dict[str, Any], str]]:
    """(variant, envelope fields to change, expected end: dead | run | wait).

    A backend that sends the encoded body (a `TransportBackend`) gets every variant; one that
    re-encodes the typed `Envelope` (Celery) only those a typed record can carry (a missing
    field, or an empty list where an object belongs, cannot be told apart from the default)."""
    variants: list[tuple[str, dict[str, Any], str]] = [
        ("time_limit is a string", {"time_limit": "30"}, "dead"),
        ("priority is a float", {"priority": 2.5}, "dead"),
        ("a header value is a number", {"headers": {"trace": 7}}, "dead"),
        ("newer envelope version", {"v": 2}, "wait"),
        ("unknown job name", {"job": contract_jobs.NEW_CODE_JOB}, "run"),
    ]
    if isinstance(ctx.suite.backend, TransportBackend):
        variants += [
            ("headers is a list", {"headers": []}, "dead"),
            ("attempt is missing", {"attempt": None}, "dead"),
        ]
    return variants


def _send(ctx: Context, variant: str, change: dict[str, Any], expect: str) -> str | None:
    """Send one variant through the backend's producer; its job id, or None if the producer
    refused it (recorded as a failed injection: such a message cannot exist on this backend)."""
    job_id = ctx.new_id()
    job = str(change.get("job", jobs.effect.name))
    env = Envelope(id=job_id, job=job, args=(job_id,), queue=ctx.queue, max_attempts=5)
    data = env.to_dict()
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    body = json.dumps(data, separators=(",", ":")).encode()
    # the typed record the backend's producer is handed carries the same wrong values
    fields = {"job": job, "priority": change.get("priority", 0),
              "time_limit": change.get("time_limit"), "headers": change.get("headers", {}),
              "version": change.get("v", env.version)}  # fmt: skip
    sent = Envelope(id=job_id, args=(job_id,), queue=ctx.queue, max_attempts=5,
                    enqueued_at=env.enqueued_at, **fields)  # fmt: skip
    ctx.job_ids.add(job_id)
    value = {"variant": variant, "expect": expect, "body_hex": body.hex(),
             "since": env.enqueued_at.timestamp()}  # fmt: skip
    ctx.record("nemesis", OpType.INVOKE, F.INJECT, job_id=job_id, value=value)
    try:
        with ctx.suite.lock:
            ctx.suite.backend.send([(sent, body)])
    except Exception as exc:  # this producer cannot even send it: nothing to judge downstream
        error = f"{type(exc).__name__}: {exc}"
        ctx.record("nemesis", OpType.FAIL, F.INJECT, job_id=job_id, value={**value, "error": error})
        return None
    ctx.record("nemesis", OpType.OK, F.INJECT, job_id=job_id, value=value)
    return job_id


def _inject_truncated(ctx: Context) -> str:
    job_id = ctx.new_id()
    env = Envelope(id=job_id, job=jobs.effect.name, args=(job_id,), queue=ctx.queue)
    body = env.encode()[:40]
    value = {"variant": "truncated JSON", "expect": "dead", "body_hex": body.hex(), "raw": True}
    ctx.job_ids.add(job_id)
    ctx.record("nemesis", OpType.INVOKE, F.INJECT, job_id=job_id, value=value)
    ctx.suite.probe.inject_raw(ctx.queue, body, id=job_id)
    ctx.record("nemesis", OpType.OK, F.INJECT, job_id=job_id, value=value)
    return job_id


def poison_variants(ctx: Context) -> None:
    rolling = not ctx.suite.in_process  # job processes of in-process workers share one app
    timeout = UNKNOWN_TIMEOUT if rolling else IN_PROCESS_TIMEOUT
    old = ctx.start_worker(concurrency=1, unknown_job_timeout=timeout)
    sent: dict[str, str] = {}
    for variant, change, expect in _variants(ctx):
        if expect == "run" and not rolling:
            expect = "wait"  # no worker will ever know it: dead-lettered after the timeout
        job_id = _send(ctx, variant, change, expect)
        if job_id is not None:
            sent[job_id] = expect
    sent[_inject_truncated(ctx)] = "dead"
    served = ctx.enqueue(jobs.effect, [], JobSpec(kind="effect"))
    ctx.settle(
        lambda: (
            ctx.succeeded([served])
            and {i for i, e in sent.items() if e == "dead"} <= ctx.dead_ids()
        ),
        "the next job ran and the unrunnable messages are dead-lettered",
        timeout=20,
    )
    entries = [{"id": d.id, "reason": d.reason} for d in ctx.suite.probe.dead(ctx.queue)]
    ctx.record("probe", OpType.OK, F.DEAD, value={"queue": ctx.queue, "entries": entries,
                                                    "early": timeout})  # fmt: skip
    ctx.record("probe", OpType.OK, F.WORKER, value={"name": old.name, "alive": old.alive()})
    if rolling:
        ctx.fault(F.TERM, old)
        if old.wait(ctx.suite.settings.grace.total_seconds() + 10) is None:
            raise ScenarioFailed("the old worker did not exit after SIGTERM")
        # if it outlived the timeout, it may rightly have dead-lettered the unknown job
        ctx.record("nemesis", OpType.OK, F.WORKER, value={"name": old.name, "exited": True})
        ctx.start_worker(
            concurrency=1,
            unknown_job_timeout=timeout,
            env={contract_jobs.NEW_CODE_ENV: "1"},
        )
    waiting = [i for i, e in sent.items() if e == "wait"]
    runs = [i for i, e in sent.items() if e == "run"]
    ctx.settle(
        lambda: set(waiting) <= ctx.dead_ids() and ctx.succeeded(runs),
        "the unknown job ran on the new worker and the newer envelope is dead-lettered",
        timeout=timeout + 30,
    )
    after = ctx.enqueue(jobs.effect, [], JobSpec(kind="effect"))
    ctx.settle(lambda: ctx.succeeded([after]), "a job sent after the poison ran")
    if ctx.suite.backend.capabilities.results:
        for job_id in sent:
            observe_result(ctx, job_id, timeout=0.5)
    ctx.drained()
