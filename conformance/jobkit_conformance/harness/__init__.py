"""The harness: fresh queues per run, real worker processes, faults, the ledger and the probe."""

from jobkit_conformance.harness.context import Context
from jobkit_conformance.harness.runner import NamespaceNotEmpty, run_suite
from jobkit_conformance.harness.settings import NotApplicable, Settings

__all__ = ["Context", "NamespaceNotEmpty", "NotApplicable", "Settings", "run_suite"]
