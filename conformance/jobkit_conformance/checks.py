"""The check registry: stable ids, each tied to the capability it verifies and the scenario
whose history it reads.

Ids are part of the public interface (reports, ``--only``, expected failures in config files):
never rename one; add a new id instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from jobkit.spi import Capabilities
from jobkit.spi import DeliveryGuarantee as Delivery
from jobkit_conformance import checkers
from jobkit_conformance.checkers import Finding
from jobkit_conformance.checkers._base import all_of
from jobkit_conformance.checkers.bounds import LATENESS_SLACK, ORPHAN_SLACK, REDELIVERY_SLACK
from jobkit_conformance.checks_contract import CONTRACT_CHECKS
from jobkit_conformance.history import History

Checker = Callable[[History], Finding]


@dataclass(frozen=True, kw_only=True)
class Capability:
    """A behaviour a backend may claim. `claimed` reads the claim from `Capabilities`;
    `refusal` names the enqueue feature that must raise `UnsupportedFeature` when unclaimed
    (None when there is nothing to ask for at enqueue)."""

    name: str
    description: str
    claimed: Callable[[Capabilities, timedelta], bool]
    refusal: str | None = None


def _always(caps: Capabilities, lease: timedelta) -> bool:
    return True


CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in [
        Capability(
            name="delivery",
            description="at-least-once delivery: nothing lost, nothing invented",
            claimed=lambda c, lease: c.delivery is Delivery.AT_LEAST_ONCE,
        ),
        Capability(
            name="redelivery",
            description="a job whose worker dies or stalls past its lease runs again",
            claimed=lambda c, lease: c.delivery is Delivery.AT_LEAST_ONCE,
        ),
        Capability(
            name="lease_extension",
            description="a job longer than the lease is not started a second time",
            claimed=lambda c, lease: c.lease_extension,
        ),
        Capability(
            name="idempotency",
            description="a duplicate of a completed job (same key) does not take effect again",
            claimed=lambda c, lease: c.idempotency_keys,
            refusal="idempotency_key",
        ),
        Capability(
            name="retries",
            description="transient errors retried with backoff up to max attempts",
            claimed=_always,
        ),
        Capability(
            name="dead_letter",
            description="exhausted, permanent and undecodable jobs kept in a dead-letter queue",
            claimed=lambda c, lease: c.dead_letter,
        ),
        Capability(
            name="time_limits",
            description="a job past its time limit is stopped and counted as a failed attempt",
            claimed=lambda c, lease: c.time_limits,
            refusal="time_limit",
        ),
        Capability(
            name="delay",
            description="delayed jobs do not start before they are due",
            claimed=lambda c, lease: c.max_delay is None or c.max_delay > timedelta(0),
            refusal="delay",
        ),
        Capability(
            name="long_delay",
            description="a delay longer than the lease runs once",
            claimed=lambda c, lease: c.max_delay is None or c.max_delay > lease * 3,
            refusal="long_delay",
        ),
        Capability(
            name="priorities",
            description="higher priorities start first",
            claimed=lambda c, lease: c.priorities > 1,
            refusal="priority",
        ),
        Capability(
            name="graceful_shutdown",
            description="SIGTERM lets running jobs finish and loses nothing",
            claimed=_always,
        ),
        Capability(
            name="enqueue_errors",
            description="enqueue raises BrokerUnavailable when the broker is down",
            claimed=_always,
        ),
        Capability(
            name="payloads",
            description="jobs receive what was enqueued and handles return what jobs returned",
            claimed=_always,
        ),
        Capability(
            name="async_jobs",
            description="async def jobs run, with retries and time limits",
            claimed=_always,
        ),
        Capability(
            name="migration",
            description="jobs migrate to another backend and back, each once with its state",
            claimed=lambda c, lease: c.migration is not None and c.migration.exports,
        ),
        Capability(
            name="capabilities",
            description="what is not claimed is refused with UnsupportedFeature at enqueue",
            claimed=_always,
        ),
        Capability(
            name="in_flight_counts",
            description="stats count the jobs other processes hold as in flight",
            claimed=lambda c, lease: c.in_flight_visible,
        ),
    ]
}


CAPABILITIES.update(
    {
        c.name: c
        for c in [
            Capability(
                name="broker_restart",
                description="jobs whose enqueue returned survive a broker restart",
                claimed=lambda c, lease: c.survives_broker_restart,
            ),
            Capability(
                name="broker_outage",
                description="a worker waits out a broker outage and serves on",
                claimed=_always,
            ),
            Capability(
                name="contract",
                description="each interface method keeps its documented promise, for every "
                "parameter, across the range a user may ask for",
                claimed=_always,
            ),
        ]
    }
)


@dataclass(frozen=True, kw_only=True)
class Check:
    id: str
    capability: str
    scenario: str
    description: str
    checker: Checker


def _c(id: str, capability: str, scenario: str, description: str, checker: Checker) -> Check:
    assert capability in CAPABILITIES, capability
    return Check(
        id=id, capability=capability, scenario=scenario, description=description, checker=checker
    )


CHECKS: tuple[Check, ...] = (
    _c("delivery.no_loss", "delivery", "*",
       "every accepted job runs to success or sits in the DLQ, in any scenario",
       checkers.no_loss),
    _c("delivery.no_unexpected", "delivery", "*",
       "nothing runs that was not enqueued, in any scenario", checkers.no_unexpected),
    _c("delivery.acked_removed", "delivery", "*",
       "once jobs settle the broker holds nothing more for them", checkers.queue_drained),
    _c("delivery.once_without_faults", "delivery", "basic",
       "without faults no job starts twice", checkers.no_duplicate_runs),
    _c("delivery.outcomes_as_specified", "delivery", "*",
       "jobs meant to succeed are not dead-lettered and vice versa",
       checkers.outcomes_as_specified),
    _c("crash.redelivered", "redelivery", "crash",
       "a job whose worker is SIGKILLed mid-run runs again (recovery time measured)",
       checkers.recovered),
    _c("crash.no_loss", "redelivery", "crash",
       "no job is lost when workers are SIGKILLed", checkers.no_loss),
    _c("crash.redelivered_within_bound", "redelivery", "crash",
       "a SIGKILLed job runs again within the declared redelivery bound for the lease, plus the "
       f"poll interval and {REDELIVERY_SLACK:g} s slack (recovery time measured)",
       checkers.redelivered_within_bound),
    _c("crash.job_process_killed_rerun", "redelivery", "orphan",
       "a job process SIGKILLed while its grandchild holds its file descriptors is noticed: the "
       f"job runs again within the redelivery bound + poll + {ORPHAN_SLACK:g} s and the worker "
       "keeps serving",
       all_of(lambda h: checkers.redelivered_within_bound(h, slack=ORPHAN_SLACK),
              checkers.no_loss)),
    _c("volume.no_loss", "delivery", "volume",
       "thousands of jobs under repeated SIGKILLs of worker process groups and a SIGSTOP past "
       "the lease: none lost (throughput measured)", checkers.volume_no_loss),
    _c("volume.no_unexpected", "delivery", "volume",
       "under the same faults nothing runs that was not enqueued", checkers.volume_no_unexpected),
    _c("volume.duplicates_explained", "delivery", "volume",
       "under the same faults a job run twice had a fault between its enqueue and its repeat "
       "(at most 1% of the jobs may repeat without one)",
       checkers.volume_duplicates_explained),
    _c("lease.expired_redelivered", "redelivery", "stop",
       "a job whose worker is SIGSTOPped past its lease runs again; the late ack loses nothing",
       all_of(checkers.redelivered_while_stopped, checkers.no_loss)),
    _c("lease.long_job_not_duplicated", "lease_extension", "long",
       "a job running several leases long is not started a second time",
       all_of(lambda h: checkers.started_once(h, ("long",)), checkers.no_loss)),
    _c("duplicate.effect_once_with_key", "idempotency", "duplicate",
       "the same envelope published twice, and two jobs with one key, take effect once",
       all_of(checkers.effect_once_per_key, checkers.no_loss)),
    _c("retry.transient_then_success", "retries", "retry",
       "a job failing N times transiently succeeds at attempt N+1",
       checkers.succeeds_after_transient),
    _c("retry.max_attempts", "retries", "retry",
       "an always-failing job is attempted exactly max_attempts times, no job more",
       all_of(checkers.exhausted_exactly, checkers.attempts_within_policy)),
    _c("retry.backoff_lower_bound", "retries", "retry",
       "retries wait at least the policy's lower bound", checkers.backoff_lower_bound),
    _c("retry.backoff_on_time", "retries", "retry",
       "retries start no later than the policy's longest backoff plus the declared scheduling "
       f"precision, the poll interval and {LATENESS_SLACK:g} s slack (lateness measured)",
       checkers.retries_on_time),
    _c("retry.permanent_not_retried", "retries", "retry",
       "a permanent error (Reject) is not retried and is dead-lettered",
       checkers.permanent_not_retried),
    _c("dlq.after_exhaustion", "dead_letter", "retry",
       "jobs out of attempts are in the dead-letter queue", checkers.dead_after_exhaustion),
    _c("dlq.contents_intact", "dead_letter", "retry",
       "dead letters carry the original envelope and a reason", checkers.dead_letters_intact),
    _c("dlq.replay", "dead_letter", "retry",
       "replayed dead letters run again", checkers.replayed),
    _c("timeout.stopped_and_counted", "time_limits", "timeout",
       "a job past its time limit is stopped (one that swallows the stop is killed within the "
       "declared time_limit_margin), each stop counts, it ends in the DLQ",
       checkers.time_limit_enforced),
    _c("delay.not_before", "delay", "delay",
       "delayed jobs do not start before they are due", checkers.not_before),
    _c("delay.on_time", "delay", "delay",
       "delayed jobs start no later than due plus the declared scheduling precision, the poll "
       f"interval and {LATENESS_SLACK:g} s slack (lateness measured)", checkers.delays_on_time),
    _c("delay.longer_than_lease_runs_once", "long_delay", "delay",
       "a job delayed longer than the lease runs once, on time",
       lambda h: checkers.started_once(h, ("long_delay",))),
    _c("priority.order", "priorities", "priority",
       "with a backlog and one consumer, higher priorities start first",
       checkers.priority_order),
    _c("shutdown.no_loss", "graceful_shutdown", "shutdown",
       "SIGTERM mid-job loses nothing", checkers.no_loss),
    _c("shutdown.in_flight_finished", "graceful_shutdown", "shutdown",
       "jobs running at SIGTERM finish within the grace", checkers.in_flight_finished),
    _c("poison.dead_lettered_worker_survives", "dead_letter", "poison",
       "an undecodable message is dead-lettered and the worker keeps serving",
       checkers.poison_handled),
    _c("enqueue.broker_down_raises", "enqueue_errors", "broker_down",
       "enqueue while the broker is unreachable raises BrokerUnavailable",
       lambda h: checkers.enqueue_refused(h, error="BrokerUnavailable")),
    _c("unsupported.raises_at_enqueue", "capabilities", "unsupported",
       "enqueue of an unclaimed feature raises UnsupportedFeature and sends nothing",
       lambda h: checkers.enqueue_refused(h, error="UnsupportedFeature")),
    *(_c(*row) for row in CONTRACT_CHECKS),
    _c("migration.round_trip_exact", "migration", "migration",
       "a mixed set migrated away and back, the migrator SIGKILLed once, is back once by id "
       "with its state", checkers.migration_exact),
)  # fmt: skip


def _observed(*promises: str) -> Checker:
    return lambda h: checkers.observed(h, promises)


# enqueue durability, broker restart and outage; the interfaces' promises one by one
CHECKS += (
    _c("durability.producer_killed", "delivery", "producer_killed",
       "a producer SIGKILLed right after enqueue returned loses none of those jobs",
       checkers.producer_killed_no_loss),
    _c("durability.broker_restart", "broker_restart", "broker_restart",
       "jobs enqueued (plain, keyed, delayed) before a broker restart all run after it "
       "(needs broker control)",
       checkers.restart_no_loss),
    _c("outage.worker_survives", "broker_outage", "outage",
       "the worker process outlives a broker outage and runs jobs enqueued after it "
       "(needs broker control)",
       checkers.outage_worker_survives),
    _c("outage.no_loss", "broker_restart", "outage",
       "jobs enqueued before or during a broker outage all complete (needs broker control)",
       checkers.outage_no_loss),
    _c("contract.receive_max_messages", "contract", "contract",
       "receive returns at least one and at most max_messages (1, 3, 25) messages",
       _observed("receive.max_messages")),
    _c("contract.receive_queues", "contract", "contract",
       "receive from several queues returns what is due on any of them",
       _observed("receive.queues")),
    _c("contract.receive_wait", "contract", "contract",
       "receive blocks for wait (0, 1.5 s) when nothing is due and returns early when a "
       "message arrives during a 20 s wait",
       _observed("receive.wait")),
    _c("contract.lease", "contract", "contract",
       "a lease of an hour holds, and extend sets a lease of an hour on a 2 s one",
       _observed("receive.lease", "extend.lease")),
    _c("contract.delays", "contract", "contract",
       "a send delayed 2 s comes after it, one delayed an hour does not come; release with a "
       "delay holds the message that long and counts one more delivery",
       _observed("send.delay", "release.delay", "release.deliveries")),
    _c("contract.dead_letters", "contract", "contract",
       "dead_letter keeps body and reason; dead_letters honours limit and order; replay by "
       "id and purge return what they moved",
       _observed("dead_letter.reason", "dead_letters.limit", "dead_letters.order",
                 "replay.ids", "purge")),
    _c("contract.stats", "contract", "contract",
       "stats counts ready, in flight, delayed and dead exactly at each step, for given queues "
       "and for all; ack of a list removes each",
       _observed("stats.counts", "stats.all_queues", "ack")),
    _c("contract.peek", "contract", "contract",
       "peek returns at most limit of the queue's own bodies and leases or counts nothing",
       _observed("peek")),
    _c("contract.release_uncounted", "contract", "contract",
       "a message released uncounted comes back after its delay with the same attempt number",
       _observed("release_uncounted")),
    _c("contract.clone_close", "contract", "contract",
       "a clone, connected ahead of use, works on the same queues; connect and close are "
       "idempotent",
       _observed("clone", "connect", "close")),
    _c("stats.counts", "contract", "stats",
       "Backend.stats counts dead, delayed, ready and in-flight jobs while a worker runs one "
       "(where in-flight counts are not claimed: ready at most the jobs not yet started, "
       "delayed at most the delayed jobs)",
       _observed("stats.counts")),
    _c("stats.in_flight", "in_flight_counts", "stats",
       "Backend.stats counts the job a worker process runs as in flight, not as ready",
       _observed("stats.in_flight")),
    _c("backend.job_record", "contract", "stats",
       "job_record tells a succeeded and a dead job's state and attempts, nothing of an unknown "
       "id (or raises UnsupportedFeature where results are not claimed)",
       _observed("backend.job_record")),
    _c("backend.message_size", "contract", "stats",
       "a job just under the declared max_message_bytes (200 KiB if unlimited) runs; one over "
       "it is refused with UnsupportedFeature",
       _observed("backend.message_size")),
    _c("backend.check_close", "contract", "stats",
       "check(app) reports no problem the capabilities rule out; close is idempotent",
       _observed("backend.check", "backend.close")),
    _c("cli.status", "contract", "stats",
       "`jobkit status` (table and --json) prints the numbers Backend.stats returns",
       _observed("cli.status")),
    _c("cli.dlq_list", "contract", "stats",
       "`jobkit dlq list` (table and --json) prints every dead letter with its reason, the "
       "count, deliveries, and honours --limit",
       _observed("cli.dlq_list", "dead_letters.limit")),
)  # fmt: skip

BY_ID: dict[str, Check] = {c.id: c for c in CHECKS}


def select(patterns: Sequence[str]) -> list[Check]:
    """The checks whose id matches any pattern (an fnmatch glob or an id prefix such as
    ``crash`` or ``retry.max``; all checks if no pattern).

    Raises `KeyError` naming a pattern that matches nothing."""
    if not patterns:
        return list(CHECKS)
    chosen: list[Check] = []
    for pattern in patterns:
        hits = [c for c in CHECKS if fnmatch.fnmatchcase(c.id, pattern) or c.id.startswith(pattern)]
        if not hits:
            raise KeyError(pattern)
        chosen += [c for c in hits if c not in chosen]
    return [c for c in CHECKS if c in chosen]


def scenarios_for(checks: Sequence[Check]) -> list[str]:
    """The scenarios those checks need, in registry order. A check of scenario "*" reads the
    histories of every scenario that runs, and brings in at least "basic"."""
    names: list[str] = []
    for c in checks:
        if c.scenario != "*" and c.scenario not in names:
            names.append(c.scenario)
    if any(c.scenario == "*" for c in checks) and "basic" not in names:
        names.insert(0, "basic")  # checks of every scenario need at least the plain one
    return names
