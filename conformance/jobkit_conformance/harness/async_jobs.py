"""The async jobs scenario: ``async def`` jobs that take effect after awaiting, one failing
transiently twice, one running far past its time limit; what each handle reports is recorded."""

from __future__ import annotations

from jobkit_conformance import contract_jobs
from jobkit_conformance.history import JobSpec

from .context import Context
from .fidelity import observe_result


def async_jobs(ctx: Context) -> None:
    ctx.start_worker()
    done = [ctx.enqueue(contract_jobs.async_effect, [], JobSpec(kind="async")) for _ in range(3)]
    flaky = ctx.enqueue(contract_jobs.async_flaky, [2], JobSpec(kind="flaky", failures=2))
    limited: list[str] = []
    if ctx.suite.backend.capabilities.time_limits:  # else refused at enqueue (`unsupported`)
        seconds = 30.0
        limited.append(ctx.enqueue(contract_jobs.async_limited, [seconds],
                       JobSpec(kind="limited", outcome="dead", duration=seconds)))  # fmt: skip
    ctx.settle(
        lambda: ctx.succeeded([*done, flaky]) and set(limited) <= set(ctx.dead_ids()),
        "the async jobs ran and the time-limited one is dead-lettered",
        timeout=30,
    )
    if ctx.suite.backend.capabilities.results:
        for job_id in [*done, flaky, *limited]:
            observe_result(ctx, job_id, timeout=1.0)
    ctx.drained()
