"""Listing, replaying and purging a queue's dead-letter queue with plain SQS calls.

SQS can only read a queue by receiving from it. Each call therefore receives the DLQ's messages
under a `Hold` sized to the scan and extended while it lasts (so one call sees each message
once, and no receipt it uses is stale), then makes the ones it leaves visible again. Replay does
not use StartMessageMoveTask (moto answers it with HTTP 500, and it cannot select ids): it sends
the chosen letters to their queue ten at a time and deletes each letter once its copy is
confirmed. A letter is sent once per replay: letters of one job id (a copy left by an earlier
replay that was cut short) are sent once and all deleted. Two replays at once receive disjoint
letters, so each letter is replayed by one of them. A crash between a send and its delete leaves
the letter on both queues, never on neither; on FIFO queues the re-send carries a deduplication
id derived from the DLQ message, so a repeated replay within 5 minutes is dropped.
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
from jobkit_sqs.hold import Hold
from jobkit_sqs.queues import QueueDirectory

MAX_SCAN = 10_000
"""Most letters one listing reads, and one round of a replay or purge moves."""

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
        hold = self._scan(pair.dlq_url)
        try:
            letters = sorted((self._letter(queue, raw) for raw in hold.raws.values()), key=_age)
        finally:
            hold.release()
        return [letter for letter, _ in letters][:limit]

    def replay(self, queue: str, *, ids: Sequence[str] | None) -> int:
        """Move the letters (all, or those of `ids`) back to `queue`, in rounds of up to
        `MAX_SCAN`; returns how many jobs were sent. Raises `JobkitError` naming what SQS
        refused (those letters stay in the DLQ)."""
        pair = self._queues.ensure(self._client, queue)
        moved = 0
        while True:
            hold = self._scan(pair.dlq_url)
            scanned = len(hold.raws)
            try:
                this_round = self._replay_round(queue, pair.url, hold, ids)
            finally:
                hold.release()
            moved += this_round
            if ids is not None or scanned < MAX_SCAN or this_round == 0:
                return moved

    def _replay_round(self, queue: str, url: str, hold: Hold, ids: Sequence[str] | None) -> int:
        wanted = None if ids is None else set(ids)
        by_job: dict[str, list[str]] = {}  # job id -> its letters' MessageIds, first is sent
        for message_id, raw in hold.raws.items():
            job_id = codec.job_id_of(raw)
            if wanted is None or job_id in wanted:
                by_job.setdefault(job_id, []).append(message_id)
        chosen = {ms for group in by_job.values() for ms in group}
        hold.release([m for m in list(hold.raws) if m not in chosen])
        groups = list(by_job.values())
        moved = 0
        failures: list[str] = []
        for start in range(0, len(groups), batches.BATCH):
            letters = {group[0]: group for group in groups[start : start + batches.BATCH]}
            hold.keep()  # every letter still held, not only these: the rest wait their turn
            # a letter whose hold was lost is someone else's now: not sent, not deleted here
            ours = {first: group for first, group in letters.items() if first in hold.raws}
            moved += self._send(queue, url, hold, ours, failures)
        if failures:
            raise JobkitError(
                f"replay of {queue!r}: {moved} sent; then {failures[0]} ({len(failures)} "
                "problem(s); letters not sent stay in the DLQ)"
            )
        return moved

    def _send(
        self, queue: str, url: str, hold: Hold, letters: dict[str, list[str]], failures: list[str]
    ) -> int:
        """Send one copy of each letter in `letters` (first MessageId -> every MessageId of
        its job) and delete all of a job's letters once its copy is confirmed."""
        entries: list[batches.Entry] = []
        group_of: dict[str, list[str]] = {}
        for index, (first, group) in enumerate(letters.items()):
            raw = hold.raws[first]
            layout = codec.layout(replay_body(codec.body_of(raw)), job_id=codec.job_id_of(raw))
            entry: batches.Entry = {
                "Id": str(index),
                "MessageBody": layout.body,
                "MessageAttributes": layout.attributes,
            }
            if self.config.fifo:
                fifo_group = queue if self.config.fifo_group == "queue" else codec.job_id_of(raw)
                entry["MessageGroupId"] = codec.fifo_id(fifo_group)
                entry["MessageDeduplicationId"] = codec.fifo_id(f"replay:{raw['MessageId']}")
            entries.append(entry)
            group_of[str(index)] = group

        def delete_letters(sent: list[batches.Entry]) -> None:
            done = [m for e in sent for m in group_of[e["Id"]]]
            undeleted = batches.delete(
                self._client,
                self.config,
                hold.url,
                hold.receipts(done),
                f"remove replayed letters from the {queue!r} DLQ",
            )
            for m in done:
                hold.drop(m)
            if undeleted:
                failures.append(
                    f"{len(undeleted)} sent but still in the DLQ (remove them by id, or they "
                    f"are replayed again): {undeleted[0][1]}"
                )

        sent, failed = batches.send(
            self._client,
            self.config,
            url,
            entries,
            f"replay to SQS queue {queue!r}",
            on_sent=delete_letters,
        )
        failures.extend(f"SQS refused a copy: {reason}" for _, reason in failed)
        return len(sent)

    def purge(self, queue: str) -> int:
        pair = self._queues.lookup(self._client, queue)
        if pair is None:
            return 0
        deleted = 0
        while True:
            hold = self._scan(pair.dlq_url, until=500)
            if not hold.raws:
                return deleted
            hold.keep()
            receipts = hold.receipts(list(hold.raws))
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

    def _scan(self, url: str, *, until: int = MAX_SCAN) -> Hold:
        hold = Hold(self._client, self.config, url)
        hold.scan(until=until, expected=self._visible(url))
        return hold

    def _visible(self, url: str) -> int:
        with translated("read SQS queue attributes", self.config):
            attrs = self._client.get().get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
        return int(attrs.get("Attributes", {}).get("ApproximateNumberOfMessages", 0))

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
