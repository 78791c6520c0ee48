"""Checkers: pure functions from a `History` to a `Finding`.

Each counts what it looks for (lost, duplicated, unexpected, recovered jobs, attempts beyond
policy, dead-letter anomalies) and names the jobs involved. None of them does I/O, so each is
unit-tested on histories written by hand (tests/conformance/test_checkers.py).

Backends are at-least-once: a checker never demands exactly one execution where a fault may
legitimately cause another; it demands idempotent effects, bounded attempts and no loss.
"""

from jobkit_conformance.checkers._base import TOLERANCE, Finding
from jobkit_conformance.checkers.bounds import (
    delays_on_time,
    redelivered_within_bound,
    retries_on_time,
)
from jobkit_conformance.checkers.contract import observed
from jobkit_conformance.checkers.dead_letters import (
    dead_after_exhaustion,
    dead_letters_intact,
    poison_handled,
    replayed,
)
from jobkit_conformance.checkers.delivery import (
    effect_once_per_key,
    in_flight_finished,
    no_duplicate_runs,
    no_loss,
    no_unexpected,
    outcomes_as_specified,
    queue_drained,
    recovered,
    redelivered_while_stopped,
    started_once,
)
from jobkit_conformance.checkers.durability import (
    outage_no_loss,
    outage_worker_survives,
    producer_killed_no_loss,
    restart_no_loss,
)
from jobkit_conformance.checkers.migration import migration_exact
from jobkit_conformance.checkers.retries import (
    attempts_within_policy,
    backoff_lower_bound,
    exhausted_exactly,
    permanent_not_retried,
    succeeds_after_transient,
)
from jobkit_conformance.checkers.timing import (
    enqueue_refused,
    not_before,
    priority_order,
    time_limit_enforced,
)
from jobkit_conformance.checkers.volume import (
    volume_duplicates_explained,
    volume_no_loss,
    volume_no_unexpected,
)

__all__ = [
    "TOLERANCE",
    "Finding",
    "attempts_within_policy",
    "backoff_lower_bound",
    "dead_after_exhaustion",
    "dead_letters_intact",
    "delays_on_time",
    "effect_once_per_key",
    "enqueue_refused",
    "exhausted_exactly",
    "in_flight_finished",
    "migration_exact",
    "no_duplicate_runs",
    "no_loss",
    "no_unexpected",
    "not_before",
    "observed",
    "outage_no_loss",
    "outage_worker_survives",
    "outcomes_as_specified",
    "permanent_not_retried",
    "poison_handled",
    "priority_order",
    "producer_killed_no_loss",
    "queue_drained",
    "recovered",
    "redelivered_while_stopped",
    "redelivered_within_bound",
    "replayed",
    "restart_no_loss",
    "retries_on_time",
    "started_once",
    "succeeds_after_transient",
    "time_limit_enforced",
    "volume_duplicates_explained",
    "volume_no_loss",
    "volume_no_unexpected",
]
