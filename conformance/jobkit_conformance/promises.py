"""The promise map: every promise of jobkit's interfaces, and the checks that fail when it is
broken.

A promise is a method of `jobkit.Transport` or `jobkit.Backend` (``Transport.ack``), each of
its parameters (``Transport.receive(wait)``), each field of `jobkit.Capabilities`
(``Capabilities.max_delay``) and each number the CLI's read commands print
(``jobkit status: in flight``). `interface_promises` derives the first three by introspection,
so a method, parameter or field added to jobkit shows up here unmapped and the self-test fails
until a check covers it (tests/conformance/test_promises.py). The README's table is
`markdown_table()`, compared with the README by the same test.
"""

from __future__ import annotations

import dataclasses
import inspect

from jobkit.spi import Backend, Capabilities, Transport

CLI_PROMISES = (
    "jobkit status: ready",
    "jobkit status: in flight",
    "jobkit status: delayed",
    "jobkit status: dead",
    "jobkit dlq list: count",
    "jobkit dlq list: id and reason",
    "jobkit dlq list: deliveries",
    "jobkit dlq list --limit",
)

_WORKER = ("delivery.no_loss", "crash.no_loss", "retry.transient_then_success")

COVERAGE: dict[str, tuple[str, ...]] = {
    # Transport
    "Transport.capabilities": ("unsupported.raises_at_enqueue", "priority.order"),
    "Transport.send": ("delivery.no_loss", "durability.producer_killed", "contract.stats"),
    "Transport.send(messages)": ("contract.stats", "contract.delays", "delivery.no_loss"),
    "Transport.receive": ("contract.receive_max_messages", *_WORKER),
    "Transport.receive(queues)": ("contract.receive_queues",),
    "Transport.receive(max_messages)": ("contract.receive_max_messages",),
    "Transport.receive(wait)": ("contract.receive_wait",),
    "Transport.receive(lease)": ("contract.lease", "lease.expired_redelivered"),
    "Transport.ack": ("contract.stats", "delivery.acked_removed"),
    "Transport.ack(deliveries)": ("contract.stats", "delivery.acked_removed"),
    "Transport.release": ("contract.delays", "retry.transient_then_success", "shutdown.no_loss"),
    "Transport.release(delivery)": ("contract.delays", "shutdown.no_loss"),
    "Transport.release(delay)": ("contract.delays", "retry.backoff_lower_bound"),
    "Transport.release_uncounted": ("contract.release_uncounted", "shutdown.buffered_run_once"),
    "Transport.release_uncounted(delivery)": ("contract.release_uncounted",),
    "Transport.release_uncounted(delay)": ("contract.release_uncounted",),
    "Transport.peek": ("contract.peek",),
    "Transport.peek(queues)": ("contract.peek",),
    "Transport.peek(limit)": ("contract.peek",),
    "Transport.dead_letter": ("contract.dead_letters", "dlq.after_exhaustion"),
    "Transport.dead_letter(delivery)": ("contract.dead_letters", "dlq.contents_intact"),
    "Transport.dead_letter(reason)": ("contract.dead_letters", "dlq.contents_intact"),
    "Transport.extend": ("contract.lease", "lease.long_job_not_duplicated"),
    "Transport.extend(delivery)": ("contract.lease", "lease.long_job_not_duplicated"),
    "Transport.extend(lease)": ("contract.lease",),
    "Transport.dead_letters": ("contract.dead_letters", "dlq.contents_intact"),
    "Transport.dead_letters(queue)": ("contract.dead_letters",),
    "Transport.dead_letters(limit)": ("contract.dead_letters",),
    "Transport.replay": ("contract.dead_letters", "dlq.replay"),
    "Transport.replay(queue)": ("contract.dead_letters", "dlq.replay"),
    "Transport.replay(ids)": ("contract.dead_letters", "dlq.replay"),
    "Transport.purge": ("contract.dead_letters",),
    "Transport.purge(queue)": ("contract.dead_letters",),
    "Transport.stats": ("contract.stats",),
    "Transport.stats(queues)": ("contract.stats",),
    "Transport.clone": ("contract.clone_close",),
    "Transport.connect": ("contract.clone_close",),
    "Transport.close": ("contract.clone_close",),
    # Backend
    "Backend.capabilities": ("unsupported.raises_at_enqueue", "backend.message_size"),
    "Backend.send": ("delivery.no_loss", "durability.producer_killed"),
    "Backend.send(envelopes)": ("payload.intact", "duplicate.effect_once_with_key"),
    "Backend.job_record": ("backend.job_record", "payload.intact"),
    "Backend.job_record(job_id)": ("backend.job_record",),
    "Backend.run_worker": _WORKER,
    "Backend.run_worker(app)": _WORKER,
    "Backend.run_worker(options)": ("shutdown.in_flight_finished", "lease.long_job_not_duplicated"),
    "Backend.dead_letters": ("dlq.list_complete", "cli.dlq_list", "dlq.contents_intact"),
    "Backend.dead_letters(queue)": ("cli.dlq_list", "dlq.contents_intact"),
    "Backend.dead_letters(limit)": ("cli.dlq_list",),
    "Backend.replay": ("dlq.replay", "dlq.once_per_replay"),
    "Backend.replay(queue)": ("dlq.replay",),
    "Backend.replay(ids)": ("dlq.replay", "dlq.once_per_replay"),
    "Backend.purge": ("dlq.purge_dead_only", "contract.dead_letters"),
    "Backend.purge(queue)": ("dlq.purge_dead_only",),
    "Backend.stats": ("stats.counts", "cli.status"),
    "Backend.stats(queues)": ("stats.counts", "cli.status"),
    "Backend.check": ("backend.check_close",),
    "Backend.check(app)": ("backend.check_close",),
    "Backend.close": ("backend.check_close",),
    # Capabilities
    "Capabilities.delivery": ("delivery.no_loss", "crash.no_loss", "crash.redelivered"),
    "Capabilities.redelivery": ("crash.redelivered", "lease.expired_redelivered"),
    # migration (jobkit migrate): the round trip away and back, the migrator SIGKILLed once
    "Transport.export": ("migration.round_trip_exact",),
    "Transport.export(queues)": ("migration.round_trip_exact",),
    "Transport.export(max_messages)": ("migration.round_trip_exact",),
    "Transport.export(lease)": ("migration.round_trip_exact",),
    "Transport.export(include_dead)": ("migration.round_trip_exact",),
    "Transport.import_messages": ("migration.round_trip_exact",),
    "Transport.import_messages(jobs)": ("migration.round_trip_exact",),
    "Transport.present": ("migration.round_trip_exact",),
    "Transport.present(ids)": ("migration.round_trip_exact",),
    "Transport.commit_export": ("migration.round_trip_exact",),
    "Transport.commit_export(jobs)": ("migration.round_trip_exact",),
    "Transport.release_export": ("migration.round_trip_exact",),
    "Transport.release_export(jobs)": ("migration.round_trip_exact",),
    "Backend.export_jobs": ("migration.round_trip_exact",),
    "Backend.export_jobs(queues)": ("migration.round_trip_exact",),
    "Backend.export_jobs(limit)": ("migration.round_trip_exact",),
    "Backend.export_jobs(lease)": ("migration.round_trip_exact",),
    "Backend.export_jobs(include_dead)": ("migration.round_trip_exact",),
    "Backend.import_jobs": ("migration.round_trip_exact",),
    "Backend.import_jobs(jobs)": ("migration.round_trip_exact",),
    "Backend.present_jobs": ("migration.round_trip_exact",),
    "Backend.present_jobs(ids)": ("migration.round_trip_exact",),
    "Backend.commit_export": ("migration.round_trip_exact",),
    "Backend.commit_export(jobs)": ("migration.round_trip_exact",),
    "Backend.release_export": ("migration.round_trip_exact",),
    "Backend.release_export(jobs)": ("migration.round_trip_exact",),
    "Capabilities.redelivery_after": ("crash.redelivered", "crash.redelivered_within_bound"),
    "Capabilities.scheduling_precision": ("delay.on_time", "retry.backoff_on_time"),
    "Capabilities.delay_rounding": ("delay.on_time",),
    "Capabilities.migration": ("migration.round_trip_exact",),
    "Capabilities.dead_letter": ("dlq.after_exhaustion", "poison.dead_lettered_worker_survives"),
    "Capabilities.max_delay": ("delay.not_before", "contract.delays", "unsupported.raises_at_enqueue"),  # noqa: E501
    "Capabilities.priorities": ("priority.order", "unsupported.raises_at_enqueue"),
    "Capabilities.dedup_window": ("duplicate.effect_once_with_key",),
    "Capabilities.time_limits": ("timeout.stopped_and_counted", "backend.check_close"),
    "Capabilities.time_limit_margin": ("timeout.stopped_and_counted",),
    "Capabilities.lease_extension": ("lease.long_job_not_duplicated", "contract.lease"),
    "Capabilities.results": ("backend.job_record",),
    "Capabilities.idempotency_keys": ("duplicate.effect_once_with_key", "unsupported.raises_at_enqueue"),  # noqa: E501
    "Capabilities.max_message_bytes": ("backend.message_size", "payload.intact"),
    "Capabilities.shared_across_processes": ("durability.producer_killed", "delivery.no_loss"),
    "Capabilities.survives_broker_restart": ("durability.broker_restart", "outage.no_loss"),
    "Capabilities.in_flight_visible": ("stats.in_flight", "stats.counts"),
    # the CLI's read commands
    "jobkit status: ready": ("cli.status",),
    "jobkit status: in flight": ("cli.status", "stats.in_flight"),
    "jobkit status: delayed": ("cli.status",),
    "jobkit status: dead": ("cli.status",),
    "jobkit dlq list: count": ("cli.dlq_list",),
    "jobkit dlq list: id and reason": ("cli.dlq_list",),
    "jobkit dlq list: deliveries": ("cli.dlq_list",),
    "jobkit dlq list --limit": ("cli.dlq_list",),
}  # fmt: skip
"""Promise -> the checks that fail when it is broken."""

NOT_PROMISES: dict[str, str] = {
    "Capabilities.name": "a label for reports and error messages; there is nothing to break",
    "Capabilities.store_option": "the URL option named in refusals; a hint, nothing to break",
}
"""Interface members that promise no behaviour, with why."""


def interface_promises() -> list[str]:
    """Every public method and parameter of `Transport` and `Backend`, and every field of
    `Capabilities`, as promise keys, found by introspection."""
    keys: list[str] = []
    for cls in (Transport, Backend):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_"):
                continue
            if isinstance(member, property):
                keys.append(f"{cls.__name__}.{name}")
            elif inspect.isfunction(member):
                keys.append(f"{cls.__name__}.{name}")
                params = list(inspect.signature(member).parameters)[1:]  # after self
                keys += [f"{cls.__name__}.{name}({p})" for p in params]
    keys += [f"Capabilities.{f.name}" for f in dataclasses.fields(Capabilities)]
    return keys


def all_promises() -> list[str]:
    return [*interface_promises(), *CLI_PROMISES]


def markdown_table() -> str:
    """The promise map as a Markdown table (the README's section is this, verbatim)."""
    lines = ["| promise | checks |", "|---|---|"]
    for key in all_promises():
        if key in NOT_PROMISES:
            lines.append(f"| `{key}` | none: {NOT_PROMISES[key]} |")
        else:
            checks = ", ".join(f"`{c}`" for c in COVERAGE.get(key, ()))
            lines.append(f"| `{key}` | {checks or '**none**'} |")
    return "\n".join(lines) + "\n"
