"""The RQ `Job` subclass whose function is jobkit's `Runtime.execute`, not an import path.

RQ resolves ``func_name`` by importing it; jobkit's job names are names, not import paths, so a
worker's job class looks the name up in its app through the runtime instead. One subclass per
runtime (`job_class_for`): no process-global state.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from redis.client import Pipeline
from rq.job import Job

if TYPE_CHECKING:
    from jobkit_rq._runtime import Runtime


class JobkitJob(Job):
    """An RQ job run through jobkit (set `jobkit_runtime` in a subclass)."""

    jobkit_runtime: Runtime | None = None

    @property
    def func(self) -> Any:
        runtime = type(self).jobkit_runtime
        if runtime is None or self.func_name is None:
            return super().func
        return functools.partial(runtime.execute, self)

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        """As RQ's, and the start count joins RQ's transaction (`Runtime.prepare`)."""
        super().prepare_for_execution(worker_name, pipeline)
        runtime = type(self).jobkit_runtime
        if runtime is not None:
            runtime.prepare(self, pipeline)

    def _handle_success(
        self, result_ttl: Any, pipeline: Pipeline, *args: Any, **kwargs: Any
    ) -> None:
        """As RQ's, and the success record joins RQ's transaction (`Runtime.success_in`)."""
        super()._handle_success(result_ttl, pipeline, *args, **kwargs)
        runtime = type(self).jobkit_runtime
        if runtime is not None:
            runtime.success_in(self, pipeline)


def job_class_for(runtime: Runtime) -> type[Job]:
    return type("JobkitJob", (JobkitJob,), {"jobkit_runtime": runtime})
