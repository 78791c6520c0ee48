"""Checks of the scenarios added for issue 10 items 2, 5, 8, 9 and 10 (payload fidelity,
dead-letter operations, poison variants, shutdown with buffered jobs, async jobs): rows of
(id, capability, scenario, description, checker) that `checks.CHECKS` registers.

Ids are stable, as in `checks`: never renamed, only added.
"""

from __future__ import annotations

from collections.abc import Callable

from jobkit_conformance.checkers import async_jobs, dlq_ops, fidelity, poison, shutdown
from jobkit_conformance.checkers._base import Finding
from jobkit_conformance.history import History

Row = tuple[str, str, str, str, Callable[[History], Finding]]

CONTRACT_CHECKS: tuple[Row, ...] = (
    ("payload.intact", "payloads", "payload",
     "jobs receive exactly what was enqueued and handle.result() returns exactly what they "
     "returned (JSON edge cases, a value at the size limit); over the limit is refused",
     fidelity.payload_intact),
    ("dlq.list_complete", "dead_letter", "dlq_ops",
     "listing through the backend shows every dead letter once, with its reason and envelope",
     dlq_ops.list_complete),
    ("dlq.once_per_replay", "dead_letter", "dlq_ops",
     "each replayed dead letter runs exactly once, also when two replays race",
     dlq_ops.replay_once),
    ("dlq.purge_dead_only", "dead_letter", "dlq_ops",
     "purge removes the dead letters and leaves ready, delayed and in-flight jobs alone",
     dlq_ops.purge_dead_only),
    ("poison.variants_as_policy", "dead_letter", "poison_variants",
     "wrong-typed envelopes are dead-lettered at once; unknown job names and newer envelope "
     "versions wait for a worker that knows them; handles report it; the worker keeps serving",
     poison.poison_variants_handled),
    ("shutdown.buffered_run_once", "graceful_shutdown", "shutdown_buffered",
     "SIGTERM with jobs leased ahead (prefetch 4, max_attempts 1): nothing new starts, every "
     "job runs exactly once",
     shutdown.buffered_run_once),
    ("async.run_like_sync", "async_jobs", "async_jobs",
     "async def jobs run their body, are retried and stopped at their time limit as sync jobs "
     "are, and their handles tell the truth",
     async_jobs.async_like_sync),
)  # fmt: skip
