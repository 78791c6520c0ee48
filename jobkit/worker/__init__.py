"""jobkit's own worker, used by every `TransportBackend`.

* `supervisor.Worker`: the parent process: leases messages, hands them to job processes, applies
  the retry policy, extends leases, handles signals.
* `_pool`: the job processes (one job at a time each, so a hard time limit can stop one).
* `_execute`: what a job process does with one envelope (and nothing else).
* `_outcome`: the pure decision of ack / release / dead-letter for one finished attempt.
* `_retrying`: broker and store calls retried through outages (`Retrier` is public, for adapters
  that run their own worker).
"""

from jobkit.worker._retrying import Retrier, Stopped
from jobkit.worker.context import JobContext, current_job, job_context

__all__ = ["JobContext", "Retrier", "Stopped", "current_job", "job_context"]
