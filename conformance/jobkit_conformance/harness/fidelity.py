"""The payload scenario: arguments and results that exercise the JSON space, one kind per job,
through a worker that leases ahead (prefetch 4), and `LARGE` values as large as the backend
declares it takes (`Capabilities.max_message_bytes`, `UNLIMITED_CAP` when unlimited); one just
over a declared limit must be refused at enqueue.

The jobs record the fingerprints of what they received and returned; the scenario adds those
to the history (`F.RECEIVED`) with what each job's handle reports (`F.RESULT`).
"""

from __future__ import annotations

from typing import Any

from jobkit.spi import Envelope
from jobkit_conformance import contract_jobs
from jobkit_conformance.history import F, JobSpec, OpType
from jobkit_conformance.payloads import TRICKY, big_text, fingerprint, nested

from .context import Context
from .settings import ScenarioFailed

UNLIMITED_CAP = 1024 * 1024
"""The largest message the scenario sends to a backend that declares no size limit."""
LARGE = 3  # jobs of the largest size
_HEADROOM = 512  # bytes left free below a declared limit (envelope fields the App may add)


def _body_size(ctx: Context, args: list[Any]) -> int:
    env = Envelope(job=contract_jobs.echo.name, args=("0" * 32, *args), queue=ctx.queue)
    return len(env.encode())


def _sized(ctx: Context, label: str, size: int) -> list[Any]:
    """[label, text] whose envelope takes `size` bytes or just under."""
    text = big_text(size)
    over = _body_size(ctx, [label, text]) - size
    while over > 0:
        text = text[: max(len(text) - over // 2 - 1, 0)]
        over = _body_size(ctx, [label, text]) - size
    return [label, text]


def payload(ctx: Context) -> None:
    caps = ctx.suite.backend.capabilities
    limit = caps.max_message_bytes
    ctx.start_worker(concurrency=2, prefetch=4)
    calls: list[tuple[str, list[Any]]] = [(label, [label, value]) for label, value in TRICKY]
    calls.append(("nested", ["nested", nested()]))
    calls.append(("everything", ["everything", *(value for _, value in TRICKY)]))
    largest = min(limit or UNLIMITED_CAP, UNLIMITED_CAP) - _HEADROOM
    # several at once: big frames to and from the job processes while others are buffered
    calls += [(f"large-{n}", _sized(ctx, f"large-{n}", largest - n)) for n in range(LARGE)]
    ids = [
        ctx.enqueue(contract_jobs.echo, args, JobSpec(kind=f"payload:{label}"))
        for label, args in calls
    ]
    if limit is not None:
        oversized = _sized(ctx, "oversized", limit + 1024)
        if _body_size(ctx, oversized) <= limit:
            raise ScenarioFailed(f"could not build a message over the {limit}-byte limit")
        ctx.enqueue(
            contract_jobs.echo,
            oversized,
            JobSpec(kind="payload:oversized", outcome="skip", feature="max_message_bytes"),
        )
    ctx.settle(lambda: ctx.succeeded(ids), "the payload jobs ran")
    for job_id, pid, at, received, returned in contract_jobs.payload_rows(
        ctx.suite.ledger, ctx.job_ids
    ):
        ctx.record(
            f"worker:{pid}",
            OpType.OK,
            F.RECEIVED,
            job_id=job_id,
            value={"received": received, "returned": returned},
            at=at,
        )
    if caps.results:
        for job_id in ids:
            observe_result(ctx, job_id)
    ctx.drained()


def observe_result(ctx: Context, job_id: str, timeout: float = 5.0) -> None:
    """Record what `handle.result()` (and the handle's state) says of `job_id`."""
    handle = ctx.suite.app.handle(job_id)
    value: dict[str, Any] = {}
    try:
        result = handle.result(timeout=timeout)
    except Exception as exc:  # JobFailed, JobTimeout: what the handle says is the observation
        value["error"] = f"{type(exc).__name__}: {exc}"
    else:
        value["fingerprint"] = fingerprint(result)
    try:
        value["state"] = str(handle.state)
    except Exception as exc:
        value["state_error"] = f"{type(exc).__name__}: {exc}"
    ctx.record("client", OpType.OK, F.RESULT, job_id=job_id, value=value)
