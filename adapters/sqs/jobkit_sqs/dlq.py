"""Listing, replaying and purging a queue's dead-letter queue with plain SQS calls.

SQS can only read a queue by receiving from it. Listing therefore receives the DLQ's messages
under a short hold (so one listing sees each message once), then makes them visible again.
Replay does not use StartMessageMoveTask (moto answers it with HTTP 500, and it cannot select
ids): it sends each chosen message to its queue, then deletes it from the DLQ. A crash between the
two leaves the message on both queues, never on neither; on FIFO queues the re-send carries a
deduplication id derived from the DLQ message, so a repeated replay within 5 minutes is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobkit import JobkitError
from jobkit.spi import DeadLetter, replay_body
from jobkit_sqs import batches, codec
from jobkit_sqs.client import SqsClient, translated
from jobkit_sqs.config import SqsConfig
from jobkit_sqs.queues import QueueDirectory

HOLD_S = 30  # how long a listing keeps the messages it has seen invisible
MAX_SCAN = 10_000

Raw = dict[str, Any]


class DeadLetters:
    def __init__(self, config: SqsConfig, client: SqsClient, queues: QueueDirectory) -> None:
        self.config = config
        self._client = client
        self._queues = queues

    def list_letters(self, queue: str, *, limit: int) -> list[DeadLetter]:
        """Oldest first (by the time of dead-lettering) among the first 10,000 scanned."""
        pair = self._queues.lookup(self._client, queue)
        if pair is None or limit <= 0:
            return []
        raws = self._collect(pair.dlq_url)
        try:
            letters = sorted((self._letter(queue, raw) for raw in raws), key=_age)
        finally:
            self._restore(pair.dlq_url, raws)
        return [letter for letter, _ in letters][:limit]

    def replay(self, queue: str, *, ids: Sequence[str] | None) -> int:
        pair = self._queues.ensure(self._client, queue)
        raws = self._collect(pair.dlq_url)
        wanted = None if ids is None else set(ids)
        chosen = [r for r in raws if wanted is None or codec.job_id_of(r) in wanted]
        chosen_ids = {id(r) for r in chosen}
        self._restore(pair.dlq_url, [r for r in raws if id(r) not in chosen_ids])
        entries = []
        for index, raw in enumerate(chosen):
            layout = codec.layout(replay_body(codec.body_of(raw)), job_id=codec.job_id_of(raw))
            entry: batches.Entry = {
                "Id": str(index),
                "MessageBody": layout.body,
                "MessageAttributes": layout.attributes,
            }
            if self.config.fifo:
                group = queue if self.config.fifo_group == "queue" else codec.job_id_of(raw)
                entry["MessageGroupId"] = codec.fifo_id(group)
                entry["MessageDeduplicationId"] = codec.fifo_id(f"replay:{raw['MessageId']}")
            entries.append(entry)
        sent, failed = batches.send(
            self._client, self.config, pair.url, entries, f"replay to SQS queue {queue!r}"
        )
        sent_ids = {e["Id"] for e in sent}
        moved = [chosen[int(i)]["ReceiptHandle"] for i in sorted(sent_ids, key=int)]
        not_moved = [r["ReceiptHandle"] for i, r in enumerate(chosen) if str(i) not in sent_ids]
        self._restore_receipts(pair.dlq_url, not_moved)
        undeleted = batches.delete(
            self._client, self.config, pair.dlq_url, moved, f"remove replayed from {queue!r} DLQ"
        )
        if failed or undeleted:
            raise JobkitError(
                f"replay of {queue!r}: {len(sent)} sent, {len(failed)} refused by SQS (left in "
                f"the DLQ), {len(undeleted)} sent but still in the DLQ (they would be replayed "
                "twice: remove them by id)"
            )
        return len(moved)

    def purge(self, queue: str) -> int:
        pair = self._queues.lookup(self._client, queue)
        if pair is None:
            return 0
        deleted = 0
        while True:
            raws = self._collect(pair.dlq_url, until=500)
            if not raws:
                return deleted
            receipts = [r["ReceiptHandle"] for r in raws]
            failures = batches.delete(
                self._client, self.config, pair.dlq_url, receipts, f"purge {queue!r} DLQ"
            )
            deleted += len(receipts) - len(failures)
            if failures:
                raise JobkitError(
                    f"purge of {queue!r}: {deleted} deleted, {len(failures)} refused: "
                    f"{failures[0][1]}"
                )

    # -- helpers -----------------------------------------------------------------------------

    def _collect(self, url: str, *, until: int = MAX_SCAN) -> list[Raw]:
        """Receive (under a hold) the messages of a DLQ, up to `until`, each once.

        Stops at the first empty answer once the approximate count has been seen; before that,
        retries an empty answer with a 1 s long poll (short polls sample on real SQS)."""
        expected = self._visible(url)
        seen: dict[str, Raw] = {}
        misses = 0
        while len(seen) < until:
            with translated("read a dead-letter queue", self.config):
                response = self._client.get().receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=min(batches.BATCH, until - len(seen)),
                    WaitTimeSeconds=1 if misses else 0,
                    VisibilityTimeout=HOLD_S,
                    MessageSystemAttributeNames=codec.SYSTEM_ATTRIBUTES,
                    MessageAttributeNames=["All"],
                )
            messages = response.get("Messages", [])
            if not messages:
                misses += 1
                if len(seen) >= expected or misses >= 3:
                    break
                continue
            for raw in messages:
                seen.setdefault(raw["MessageId"], raw)
        return list(seen.values())

    def _visible(self, url: str) -> int:
        with translated("read SQS queue attributes", self.config):
            attrs = self._client.get().get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(attrs.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

    def _restore(self, url: str, raws: Sequence[Raw]) -> None:
        self._restore_receipts(url, [r["ReceiptHandle"] for r in raws])

    def _restore_receipts(self, url: str, receipts: Sequence[str]) -> None:
        if receipts:
            batches.change_visibility(
                self._client, self.config, url, receipts, 0, "restore dead letters"
            )

    def _letter(self, queue: str, raw: Raw) -> tuple[DeadLetter, tuple[float, str]]:
        reason = codec.attr_str(raw, codec.REASON)
        dead_at_text = codec.attr_str(raw, codec.DEAD_AT)
        dead_at = datetime.fromisoformat(dead_at_text) if dead_at_text else None
        deliveries = codec.attr_float(raw, codec.DELIVERIES)
        if reason is None:  # moved by the redrive policy, not by jobkit
            reason = (
                f"moved by the SQS redrive policy after {self.config.max_receives} receives "
                "(the job was never settled: worker crash loop?)"
            )
            deliveries = codec.prior_of(raw) + self.config.max_receives
        when = dead_at or codec.sent_at(raw)
        letter = DeadLetter(
            queue=queue,
            id=codec.job_id_of(raw),
            body=codec.body_of(raw),
            reason=reason,
            dead_at=dead_at,
            deliveries=int(deliveries or 0),
        )
        return letter, (when.timestamp() if when else 0.0, raw["MessageId"])


def _age(item: tuple[DeadLetter, tuple[float, str]]) -> tuple[float, str]:
    return item[1]
