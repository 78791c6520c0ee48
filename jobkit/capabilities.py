"""What a configured backend instance can honour, declared up front.

A request outside these capabilities raises `UnsupportedFeature` at enqueue, never later and never
silently. The conformance suite holds each claim to account: a claimed capability must pass its
checks, an unclaimed one must be refused at enqueue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from jobkit.envelope import Envelope
from jobkit.errors import UnsupportedFeature


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at-least-once"
    AT_MOST_ONCE = "at-most-once"


@dataclass(frozen=True, kw_only=True)
class MigrationSupport:
    """What a backend can do for `jobkit migrate` (see `Backend.export_jobs`).

    `exports`: jobs can be exported from it (False: a migration target only, as Celery+RabbitMQ
    is without a store).
    `delayed_before_due`: delayed jobs are exported with their remaining delay before they are
    due (False: the broker hides them until due, as SQS does; they are left and reported).
    `dead_letters`: dead letters are exported and imported as dead letters, with their reason.
    `dedup` says how `import_jobs` recognises a job it already has, so that a re-run after a
    kill sends nothing twice: "native" (looked up by id in the broker, in the same transaction
    as the insert; a job imported, run and acked before a re-run is sent again, and the worker
    acks that copy without running it, its key being done), "marker" (a marker per job id in
    the backend's shared job store, written after the send: a kill between the send and the
    marker sends that batch again, and the worker then acks the second copy without running it
    if the first has finished) or "none" (no durable way to tell: a re-run after a kill may send
    the last batch twice).
    `killed_export_counts`: a ready job that a migrator was holding when it was killed comes back
    to the queue counting one delivery more (the broker counts deliveries, not starts, as for
    a crashed worker), so the next export carries one attempt more used than the job had; at
    most one batch per kill.
    """

    exports: bool = True
    delayed_before_due: bool = True
    dead_letters: bool = True
    dedup: str = "native"
    killed_export_counts: bool = False


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """The claims of one configured backend instance.

    `redelivery` says what makes an unacknowledged job run again (for example "lease expiry",
    "connection loss"); `redelivery_after` after how long at most when the configuration fixes it
    (a visibility timeout in the URL, a heartbeat), None when the worker's lease decides:
    `redelivery_bound` combines both with the worker's lease.
    `scheduling_precision` is how late at most the broker makes a message that falls due (a
    delayed job, a retry after its backoff, a message whose lease ran out) available to a worker
    that is polling: its timer's resolution, a sweep interval, a rounding up of short delays.
    `delay_rounding` adds a share of the delay for brokers that round long delays up (0.1:
    a 10 min delay may be due up to 1 min late); `due_bound` combines both.
    `max_delay` is None for unlimited delays, `timedelta(0)` when delays are not supported.
    `priorities` is the number of distinct priority levels (1: no priorities), higher runs first.
    `dedup_window` is the window of native duplicate suppression, None when the broker has none
    (jobkit's idempotency keys still work through the job store).
    `migration` says what `jobkit migrate` can move out of and into this backend (None: it
    cannot export or import jobs).
    `survives_broker_restart` says whether a job whose enqueue returned is still there after the
    broker process is stopped and started again (a file, durable queues and persistent
    messages, a broker with persistence configured): False for brokers that keep messages only
    in memory. Claim it only where it holds with this configuration.
    `time_limit_margin` is how long past its time limit a job that does not stop when asked
    (it catches what the worker raises in it, or is stuck in a C call) may still run before its
    process is killed: 0 where the worker kills the job's process at the limit.
    `idempotency_keys` says whether a job carrying the key of a completed job is acked without
    running on every worker of this backend, which needs a job store they all share; `results`
    whether job states and results are kept where `job_record` (and `JobHandle.result`) can
    read them from any process. A configuration without a shared store claims neither: a key is
    then refused at enqueue and `job_record` raises, both with `UnsupportedFeature` naming
    `store_option`, the URL option that gives the backend a shared store (None: there is none).
    `in_flight_visible` says whether `Backend.stats` counts, as in flight, every message any
    process holds unacknowledged (a job running on another worker, a message its consumer has
    prefetched). False where the broker tells each client only about its own, as AMQP 0-9-1
    does: other processes' unacknowledged messages are then counted nowhere (not as ready, nor
    in flight, nor as delayed where a worker holds delayed messages until due, as Dramatiq's
    workers do), and `stats` adds only what this process holds.
    """

    name: str
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    redelivery: str = "lease expiry"
    redelivery_after: timedelta | None = None
    scheduling_precision: timedelta = timedelta(seconds=1)
    delay_rounding: float = 0.0
    dead_letter: bool = True
    max_delay: timedelta | None = None
    priorities: int = 10
    dedup_window: timedelta | None = None
    time_limits: bool = True
    time_limit_margin: timedelta = timedelta(0)
    lease_extension: bool = True
    results: bool = True
    max_message_bytes: int | None = None
    shared_across_processes: bool = True
    migration: MigrationSupport | None = None
    survives_broker_restart: bool = False
    idempotency_keys: bool = True
    store_option: str | None = None
    in_flight_visible: bool = True

    def redelivery_bound(self, lease: timedelta) -> timedelta:
        """At most how long after its consumer died or stalled an unacknowledged message is
        available again to a polling worker whose lease is `lease` (counted from the last time
        the lease was taken or extended): `redelivery_after` (or else `lease`) plus
        `scheduling_precision`. The worker's own poll interval is not included."""
        base = self.redelivery_after if self.redelivery_after is not None else lease
        return base + self.scheduling_precision

    def due_bound(self, delay: timedelta) -> timedelta:
        """At most how late after its due time a message delayed by `delay` (a delayed job, a
        retry backoff) is available to a polling worker; the poll interval is not included."""
        return self.scheduling_precision + delay * self.delay_rounding

    def without_store(self, feature: str, change: str) -> str:
        """What to change to get `feature` (idempotency keys, results) on a configuration that
        has no shared store: the URL option that gives one, else `change`."""
        if self.store_option is None:
            return change
        return (
            f"Add {self.store_option} to the backend URL for {feature}, "
            f"or {change[0].lower()}{change[1:]}"
        )

    def check(self, envelope: Envelope, body_size: int, *, now_delay: timedelta) -> None:
        """Raise `UnsupportedFeature` if `envelope` asks for more than these capabilities."""
        if envelope.idempotency_key is not None and not self.idempotency_keys:
            raise UnsupportedFeature(
                asked=f"job {envelope.job!r} asked for idempotency key "
                f"{envelope.idempotency_key!r}",
                supported=f"{self.name} has no job store shared by its workers, so a worker "
                "cannot tell that another completed that key",
                change=self.without_store("idempotency keys", "Drop the key"),
            )
        if now_delay > timedelta(0) and self.max_delay is not None and now_delay > self.max_delay:
            if self.max_delay == timedelta(0):
                supported = f"{self.name} does not support delayed jobs"
            else:
                supported = f"{self.name} supports delays up to {_fmt(self.max_delay)}"
            raise UnsupportedFeature(
                asked=f"job {envelope.job!r} asked for a delay of {_fmt(now_delay)}",
                supported=supported,
                change="Use a shorter delay, or enqueue the job later (from cron, say)",
            )
        if envelope.priority and not 0 <= envelope.priority < max(self.priorities, 1):
            if self.priorities <= 1:
                supported = f"{self.name} has no priorities"
                change = "Drop the priority, or route urgent jobs to their own queue"
            else:
                supported = f"{self.name} supports priorities 0..{self.priorities - 1}"
                change = "Use a priority in that range"
            raise UnsupportedFeature(
                asked=f"job {envelope.job!r} asked for priority {envelope.priority}",
                supported=supported,
                change=change,
            )
        if envelope.time_limit is not None and not self.time_limits:
            change = "Drop the time limit, or use a backend whose worker enforces it"
            if self.store_option is not None:
                change = f"Drop the time limit, or add {self.store_option} to the backend URL"
            raise UnsupportedFeature(
                asked=f"job {envelope.job!r} has a time limit of {envelope.time_limit} s",
                supported=f"{self.name} does not enforce time limits as configured",
                change=change,
            )
        if self.max_message_bytes is not None and body_size > self.max_message_bytes:
            raise UnsupportedFeature(
                asked=f"job {envelope.job!r} is {body_size} bytes on the wire",
                supported=f"{self.name} takes messages up to {self.max_message_bytes} bytes",
                change="Pass a reference (a key or URL) to the data instead of the data",
            )


def _fmt(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"
