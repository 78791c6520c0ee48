"""jobkit-conformance: one behavioural contract for background jobs, checked on every backend by
injecting the faults that lose or duplicate jobs in production.

Run it with ``jobkit-conformance run --backend URL`` or, inside pytest, with
``pytest --jobkit-backend URL``.
"""

from jobkit_conformance.checkers import Finding
from jobkit_conformance.checks import CHECKS, Check
from jobkit_conformance.history import F, History, JobSpec, Op, OpType
from jobkit_conformance.outcome import CheckOutcome, Outcome, RunResult

__version__ = "0.1.0"

__all__ = [
    "CHECKS",
    "Check",
    "CheckOutcome",
    "F",
    "Finding",
    "History",
    "JobSpec",
    "Op",
    "OpType",
    "Outcome",
    "RunResult",
]
