"""The harness: fresh queues per run, real worker processes, faults, the ledger and the probe."""

from jobkit_conformance.harness.context import Context, NotApplicable, Settings
from jobkit_conformance.harness.runner import NamespaceNotEmpty, run_suite

__all__ = ["Context", "NamespaceNotEmpty", "NotApplicable", "Settings", "run_suite"]
