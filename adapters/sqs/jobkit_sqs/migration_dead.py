"""Dead letters for `jobkit migrate` on SQS: received from the DLQ under the export lease,
with their reason and the deliveries they used; committing deletes them, releasing makes them
visible again. An imported dead letter is sent straight to the DLQ with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from jobkit import JobkitError
from jobkit.spi import ExportedJob, fold_attempts
from jobkit_sqs import batches, codec
from jobkit_sqs.client import SqsClient
from jobkit_sqs.config import SqsConfig
from jobkit_sqs.migration import IndexHold, key_of, lease_seconds, receive_held


@dataclass(frozen=True)
class DeadHold:
    """The export lease on a dead letter (`ExportedJob.native`)."""

    url: str
    receipt: str


def export_dead(
    client: SqsClient,
    config: SqsConfig,
    queue: str,
    dlq_url: str,
    *,
    limit: int,
    lease: timedelta,
) -> list[ExportedJob]:
    """Up to `limit` dead letters of `queue`, each held for `lease`, with its reason and the
    deliveries it used folded into its body."""
    hold = lease_seconds(lease)
    out: list[ExportedJob] = []
    while len(out) < limit:
        raws = receive_held(
            client, config, dlq_url, min(batches.BATCH, limit - len(out)), hold, "read a DLQ"
        )
        if not raws:
            break
        for raw in raws:
            reason = codec.attr_str(raw, codec.REASON)
            deliveries = codec.attr_float(raw, codec.DELIVERIES)
            if reason is None:  # moved by the redrive policy, not by jobkit
                reason = (
                    f"moved by the SQS redrive policy after {config.max_receives} receives "
                    "(the job was never settled: worker crash loop?)"
                )
                deliveries = codec.prior_of(raw) + config.max_receives
            body = codec.body_of(raw)
            used = int(deliveries or 0)
            out.append(
                ExportedJob(
                    queue=queue,
                    id=codec.job_id_of(raw),
                    body=(fold_attempts(body, used) or body) if used else body,
                    dedup_key=key_of(body),
                    dead_reason=reason,
                    receipt=raw["ReceiptHandle"],
                    native=DeadHold(url=dlq_url, receipt=raw["ReceiptHandle"]),
                )
            )
    return out


def dead_entries(jobs: Sequence[ExportedJob]) -> list[batches.Entry]:
    """DLQ entries for imported dead letters (their attempts are folded in the body already)."""
    now = datetime.now(UTC)
    entries: list[batches.Entry] = []
    for index, job in enumerate(jobs):
        extra = codec.dead_attributes(job.dead_reason or "", 0, now)
        layout = codec.layout(job.body, job_id=job.id, extra=extra)
        entries.append(
            {"Id": str(index), "MessageBody": layout.body, "MessageAttributes": layout.attributes}
        )
    return entries


def release_holds(
    client: SqsClient, config: SqsConfig, holds: Sequence[IndexHold | DeadHold]
) -> None:
    """Make held index entries and dead letters visible again."""
    by_url: dict[str, list[str]] = {}
    for hold in holds:
        by_url.setdefault(hold.url, []).append(hold.receipt)
    for url, receipts in by_url.items():
        batches.change_visibility(client, config, url, receipts, 0, "release exported")


def delete_dead(client: SqsClient, config: SqsConfig, holds: Sequence[DeadHold]) -> None:
    by_url: dict[str, list[str]] = {}
    for hold in holds:
        by_url.setdefault(hold.url, []).append(hold.receipt)
    for url, receipts in by_url.items():
        failures = batches.delete(client, config, url, receipts, "remove exported dead letters")
        if failures:
            raise JobkitError(
                f"SQS did not delete {len(failures)} exported dead letters (they are at the "
                f"target too; run migrate again to remove them): {failures[0][1]}"
            )
