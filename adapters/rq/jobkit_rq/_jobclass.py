"""The RQ `Job` subclass whose function is jobkit's `Runtime.execute`, not an import path.

RQ resolves ``func_name`` by importing it; jobkit's job names are names, not import paths, so a
worker's job class looks the name up in its app through the runtime instead. One subclass per
runtime (`job_class_for`): no process-global state.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

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


def job_class_for(runtime: Runtime) -> type[Job]:
    return type("JobkitJob", (JobkitJob,), {"jobkit_runtime": runtime})
