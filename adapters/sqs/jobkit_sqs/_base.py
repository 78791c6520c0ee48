"""`SqsQueues`, the queue semantics of `SqsTransport`: jobkit's leased-delivery `Transport` on
Amazon SQS.

The mapping is direct: a lease is the visibility timeout, `receive` is ReceiveMessage (long
polling), `ack` is DeleteMessageBatch, `release` and `extend` are ChangeMessageVisibility, and
`Delivery.deliveries` is SQS's ApproximateReceiveCount (plus deliveries carried across a
re-send, see `codec`). Dead letters go to a DLQ per queue, with the reason in a message
attribute; the redrive policy on every queue is a safety net for crash loops.

Delays beyond SQS's 15 minutes are honoured by re-delaying: the message carries its due time and
is re-sent with the remaining delay (up to 15 min each hop) when it surfaces early; the re-send
keeps its delivery count, so a hop is never counted as an attempt.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from jobkit import JobkitError, UnsupportedFeature
from jobkit.spi import (
    Capabilities,
    Delivery,
    JobStore,
    Message,
    Transport,
)
from jobkit_sqs import batches, codec, migration
from jobkit_sqs._capabilities import capabilities_for
from jobkit_sqs._redelay import redelay
from jobkit_sqs.client import GONE, QueueGone, SqsClient, error_code, translated
from jobkit_sqs.config import MAX_VISIBILITY, SqsConfig
from jobkit_sqs.dlq import DeadLetters
from jobkit_sqs.queues import QueueDirectory

log = logging.getLogger("jobkit.sqs")

_MAX_VISIBILITY_S = int(MAX_VISIBILITY.total_seconds())
_DEAD_LETTER_HOLD_S = 60  # lease held on a message while it is moved to the DLQ
_FINISHED_MEMORY = 4096
_WAIT_SLACK_S = 0.25  # a long poll may end this much after `wait` (SQS waits in whole seconds)


def _seconds_up(delta: timedelta) -> int:
    return max(0, math.ceil(delta.total_seconds() - 1e-9))


class SqsQueues(Transport):
    """The queue semantics of `SqsTransport` (send, receive, settle); see the module docstring.
    One thread at a time."""

    def __init__(
        self,
        config: SqsConfig,
        *,
        results: bool = False,
        directory: QueueDirectory | None = None,
        store: JobStore | None = None,
    ) -> None:
        """`store`: the backend's shared job store, where exported delayed jobs leave their
        tombstones (None: delayed jobs are not indexed, and migrate only once due)."""
        self.config = config
        self._results = results
        self._store = store if not config.fifo else None
        self._caps = capabilities_for(config, results=results, indexed=self._store is not None)
        self._hop = config.delay_hop  # longest native DelaySeconds (900 unless testing)
        self._client = SqsClient(config)
        self._queues = directory or QueueDirectory(config)
        self._dlq = DeadLetters(config, self._client, self._queues)
        self._index = (
            migration.DelayIndex(config, self._client, self._queues, self._store)
            if self._store is not None
            else None
        )
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._rotation = 0
        self._lock = threading.Lock()

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def connect(self) -> None:
        """Create this instance's boto3 client (loading botocore's service model takes a
        second or more on a busy machine; no request is sent)."""
        self._client.get()

    def close(self) -> None:
        self._client.close()

    # -- send --------------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """Validates every message first (size, delay, priority), then sends per queue in
        batches of 10. All or nothing per batch call only: SQS has no multi-batch transaction."""
        self._send(messages)

    def _send(self, messages: Sequence[Message], *, stays: Mapping[str, int] | None = None) -> None:
        """`send`, with delayed messages indexed after them (a producer killed in between leaves
        an unindexed message, which moves once due; never an entry naming a job not sent) or,
        given the jobs' `stays`, before them: for a migration import, which is run again after
        a kill until its marker is written (an entry whose message was not sent names a job
        that the re-run sends again, under a new entry; without it, the first copy would stay
        unindexed and could not be exported before due)."""
        now = time.time()
        by_queue: dict[str, list[batches.Entry]] = {}
        indexed: dict[str, list[tuple[str, bytes, float, int, str]]] = {}
        for index, message in enumerate(messages):
            entry = self._entry(message, now)
            entry["Id"] = str(index)
            by_queue.setdefault(message.queue, []).append(entry)
            if self._index is not None and message.delay > timedelta(0):
                gen = migration.new_gen()
                entry["MessageAttributes"][codec.GEN] = codec.string_attr(gen)
                due = now + message.delay.total_seconds()
                indexed.setdefault(message.queue, []).append(
                    (message.id, message.body, due, 0, gen)
                )
        pairs = {queue: self._queues.ensure(self._client, queue) for queue in by_queue}
        if stays is not None:
            self._add_to_index(indexed, stays)
        for queue, entries in by_queue.items():
            what = f"send to SQS queue {queue!r}"
            try:
                _, failed = batches.send(self._client, self.config, pairs[queue].url, entries, what)
            except QueueGone:  # deleted since it was looked up: create it again, send once more
                self._queues.forget(queue)
                url = self._queues.ensure(self._client, queue).url
                _, failed = batches.send(self._client, self.config, url, entries, what)
            if failed:
                raise JobkitError(
                    f"SQS refused {len(failed)} of {len(entries)} messages for {queue!r}: "
                    f"{failed[0][1]}"
                )
        if stays is None:
            self._add_to_index(indexed)

    def _add_to_index(
        self,
        indexed: dict[str, list[tuple[str, bytes, float, int, str]]],
        stays: Mapping[str, int] | None = None,
    ) -> None:
        if self._index is None:
            return
        for queue, rows in indexed.items():
            try:
                self._index.add(queue, rows, stays=stays)
            except JobkitError as exc:  # the jobs are queued: they move once due instead
                log.warning("%s", exc)

    def _entry(self, message: Message, now: float) -> batches.Entry:
        if message.priority:
            raise UnsupportedFeature(
                asked=f"message {message.id} has priority {message.priority}",
                supported="SQS has no priorities",
                change="Drop the priority, or route urgent jobs to their own queue",
            )
        delay = message.delay.total_seconds()
        if delay > 0 and self.config.fifo:
            raise UnsupportedFeature(
                asked=f"message {message.id} asked for a delay of {delay:g} s",
                supported="SQS FIFO queues take no per-message delay",
                change="Use a standard queue (fifo=false) for delayed jobs",
            )
        due = now + delay if delay > self._hop else None
        layout = codec.layout(message.body, job_id=message.id, due=due)
        size = codec.body_size(layout.body)
        if size > self._caps.max_message_bytes:  # type: ignore[operator]
            raise UnsupportedFeature(
                asked=f"message {message.id} is {size} bytes on the wire",
                supported=f"this SQS backend takes messages up to {self._caps.max_message_bytes} "
                f"bytes ({self.config.max_message_bytes} minus room for jobkit's attributes)",
                change="Pass a reference (a key or URL) to the data instead of the data",
            )
        entry: batches.Entry = {"MessageBody": layout.body, "MessageAttributes": layout.attributes}
        if delay > 0:
            entry["DelaySeconds"] = min(self._hop, _seconds_up(message.delay))
        if self.config.fifo:
            group = message.queue if self.config.fifo_group == "queue" else message.id
            entry["MessageGroupId"] = codec.fifo_id(group)
            entry["MessageDeduplicationId"] = codec.fifo_id(message.dedup_key or message.id)
        return entry

    # -- receive -----------------------------------------------------------------------------

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Long-polls for up to `wait`, in calls of at most 20 s (whole seconds, so a call may
        end up to 0.25 s after `wait`; a rest under a second is slept). With several queues,
        each is first polled without waiting, in rotation, then they are long-polled in turn.
        Up to 10 messages per call."""
        if not queues:
            return []
        deadline = time.monotonic() + max(0.0, wait.total_seconds())
        wanted = max(1, min(max_messages, batches.BATCH))
        visibility = min(_MAX_VISIBILITY_S, _seconds_up(lease))
        order = list(queues)
        with self._lock:
            start = self._rotation % len(order)
            self._rotation += 1
        order = order[start:] + order[:start]
        got: list[Delivery] = []
        if len(order) > 1:
            for queue in order:
                got.extend(self._receive_one(queue, wanted - len(got), 0, visibility))
                if len(got) >= wanted:
                    return got
            if got:
                return got
        turn = 0
        while (seconds := int(deadline - time.monotonic() + _WAIT_SLACK_S)) >= 1:
            long_wait = min(self.config.wait, seconds)
            got = self._receive_one(order[turn % len(order)], wanted, long_wait, visibility)
            turn += 1
            if got:
                return got
        if turn == 0 and len(order) == 1:  # less than 1 s to wait: poll once without waiting
            got = self._receive_one(order[0], wanted, 0, visibility)
            if got:
                return got
        remaining = deadline - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)  # SQS waits in whole seconds; honour the rest of `wait`
        return []

    def _receive_one(self, queue: str, n: int, wait_s: int, visibility: int) -> list[Delivery]:
        pair = self._queues.ensure(self._client, queue)
        # Taken before the call: the lease may start later (a long poll), never earlier.
        leased_until = datetime.now(UTC) + timedelta(seconds=visibility)
        try:
            with translated(f"receive from SQS queue {queue!r}", self.config):
                response = self._client.get().receive_message(
                    QueueUrl=pair.url,
                    MaxNumberOfMessages=n,
                    WaitTimeSeconds=wait_s,
                    VisibilityTimeout=visibility,
                    MessageSystemAttributeNames=codec.SYSTEM_ATTRIBUTES,
                    MessageAttributeNames=["All"],
                )
        except QueueGone:
            self._queues.forget(queue)  # deleted: the next receive creates it again
            raise
        now = time.time()
        due: list[Delivery] = []
        early: list[dict[str, Any]] = []
        for raw in response.get("Messages", []):
            not_before = codec.attr_float(raw, codec.DUE)
            if not_before is not None and not_before > now:
                early.append(raw)
                continue
            due.append(
                Delivery(
                    queue=queue,
                    id=codec.job_id_of(raw),
                    body=codec.body_of(raw),
                    deliveries=codec.prior_of(raw) + codec.receive_count(raw),
                    receipt=raw["ReceiptHandle"],
                    leased_until=leased_until,
                    native=raw,
                )
            )
        if early:
            redelay(self._client, self.config, self._hop, queue, pair.url, early, now)
        if self._index is not None and due:
            gone = self._index.tombstoned([d.native for d in due])
            if gone:  # migrated away while delayed: the copy at the target runs it
                dropped = [d for d in due if d.native["MessageId"] in gone]
                batches.delete(
                    self._client,
                    self.config,
                    pair.url,
                    [d.receipt for d in dropped],
                    f"drop migrated messages on {queue!r}",
                )
                due = [d for d in due if d.native["MessageId"] not in gone]
        return due

    # -- settle ------------------------------------------------------------------------------

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, list[str]] = {}
        for delivery in deliveries:
            by_queue.setdefault(delivery.queue, []).append(delivery.receipt)
        for queue, receipts in by_queue.items():
            pair = self._queues.ensure(self._client, queue)
            failures = batches.delete(
                self._client, self.config, pair.url, receipts, f"ack on SQS queue {queue!r}"
            )
            if failures:
                raise JobkitError(
                    f"SQS did not delete {len(failures)} acked messages on {queue!r}: "
                    f"{failures[0][1]}"
                )
            self._remember(receipts)

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """ChangeMessageVisibility(delay). A delay beyond 15 minutes on a standard queue is a
        re-send carrying the delivery count and due time (send, then delete)."""
        if delivery.receipt in self._finished:
            return
        seconds = _seconds_up(delay)
        if seconds <= self._hop or self.config.fifo:
            if self._change_visibility(delivery, min(seconds, _MAX_VISIBILITY_S)) and seconds:
                self._index_release(delivery, delay, kind="leased")
            return
        if not self._change_visibility(delivery, _DEAD_LETTER_HOLD_S):
            return  # acked, moved or released already
        pair = self._queues.ensure(self._client, delivery.queue)
        layout = codec.layout(
            delivery.body,
            job_id=delivery.id,
            due=time.time() + delay.total_seconds(),
            prior=delivery.deliveries,
            extra=self._gen_attr(delivery),
        )
        with translated(f"release on SQS queue {delivery.queue!r}", self.config):
            self._client.get().send_message(
                QueueUrl=pair.url,
                MessageBody=layout.body,
                MessageAttributes=layout.attributes,
                DelaySeconds=self._hop,
            )
        self._delete_one(pair.url, delivery)
        self._index_release(delivery, delay, kind="delayed")

    def _gen_attr(self, delivery: Delivery) -> dict[str, dict[str, str]]:
        """The generation token a re-send of `delivery` keeps (see `jobkit_sqs.migration`)."""
        if not isinstance(delivery.native, dict):
            return {}
        return {codec.GEN: codec.string_attr(codec.gen_of(delivery.native))}

    def _index_release(self, delivery: Delivery, delay: timedelta, *, kind: str) -> None:
        if self._index is None or self.config.fifo or not isinstance(delivery.native, dict):
            return
        due = time.time() + delay.total_seconds()
        gen = codec.gen_of(delivery.native)
        self._index.add(
            delivery.queue, [(delivery.id, delivery.body, due, delivery.deliveries, gen)], kind=kind
        )

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """ApproximateReceiveCount cannot be lowered, so: hold the message, re-send its body
        carrying `deliveries - 1` as `jobkit-prior` (the copy's first receive then counts the
        same as this one), then delete this delivery. A crash in between duplicates, never
        loses. On a FIFO queue, which takes no per-message delay, a delayed release is a plain
        (counted) `release`."""
        if delivery.receipt in self._finished:
            return
        if self.config.fifo and delay > timedelta(0):
            self.release(delivery, delay=delay)
            return
        if not self._change_visibility(delivery, _DEAD_LETTER_HOLD_S):
            return  # acked, moved or released already
        pair = self._queues.ensure(self._client, delivery.queue)
        seconds = _seconds_up(delay)
        layout = codec.layout(
            delivery.body,
            job_id=delivery.id,
            due=time.time() + delay.total_seconds() if seconds > self._hop else None,
            prior=max(delivery.deliveries - 1, 0),
            extra=self._gen_attr(delivery),
        )
        params: dict[str, Any] = {
            "QueueUrl": pair.url,
            "MessageBody": layout.body,
            "MessageAttributes": layout.attributes,
        }
        if self.config.fifo:
            group = delivery.queue if self.config.fifo_group == "queue" else delivery.id
            params["MessageGroupId"] = codec.fifo_id(group)
            params["MessageDeduplicationId"] = codec.fifo_id(f"release:{delivery.receipt}")
        else:
            params["DelaySeconds"] = min(self._hop, seconds)
        with translated(f"release on SQS queue {delivery.queue!r}", self.config):
            self._client.get().send_message(**params)
        self._delete_one(pair.url, delivery)

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        """SQS cannot look without receiving, and a receive counts in ApproximateReceiveCount:
        so the messages looked at are received (hidden for a minute), then each is given back
        at once with `release_uncounted`. Only visible messages are seen, up to `limit`. A FIFO
        queue is not looked at (giving messages back would reorder their groups)."""
        if self.config.fifo:
            return []
        bodies: list[bytes] = []
        for queue in dict.fromkeys(queues):
            held: list[Delivery] = []
            try:
                while len(bodies) + len(held) < limit:
                    wanted = min(batches.BATCH, limit - len(bodies) - len(held))
                    got = self._receive_one(queue, wanted, 0, _DEAD_LETTER_HOLD_S)
                    if not got:
                        break
                    held.extend(got)
            finally:
                for delivery in held:
                    self.release_uncounted(delivery)
            bodies.extend(d.body for d in held)
        return bodies

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        self._change_visibility(delivery, min(_MAX_VISIBILITY_S, _seconds_up(lease)))

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        """Send the body to the DLQ with the reason, then delete it from its queue (send first:
        never lost). A no-op when the message is no longer leased (acked or moved already)."""
        if delivery.receipt in self._finished:
            return
        if not self._change_visibility(delivery, _DEAD_LETTER_HOLD_S):
            return
        pair = self._queues.ensure(self._client, delivery.queue)
        extra = codec.dead_attributes(reason, delivery.deliveries, datetime.now(UTC))
        layout = codec.layout(delivery.body, job_id=delivery.id, extra=extra)
        params: dict[str, Any] = {
            "QueueUrl": pair.dlq_url,
            "MessageBody": layout.body,
            "MessageAttributes": layout.attributes,
        }
        if self.config.fifo:
            params["MessageGroupId"] = codec.fifo_id(delivery.id)
            params["MessageDeduplicationId"] = codec.fifo_id(f"dead:{delivery.receipt}")
        with translated(f"dead-letter on SQS queue {delivery.queue!r}", self.config):
            self._client.get().send_message(**params)
        self._delete_one(pair.url, delivery)

    def _change_visibility(self, delivery: Delivery, seconds: int) -> bool:
        """False when the message is gone or no longer in flight under this receipt."""
        pair = self._queues.ensure(self._client, delivery.queue)
        with translated(f"change visibility on SQS queue {delivery.queue!r}", self.config):
            try:
                self._client.get().change_message_visibility(
                    QueueUrl=pair.url, ReceiptHandle=delivery.receipt, VisibilityTimeout=seconds
                )
            except ClientError as exc:
                if error_code(exc) in GONE:
                    return False
                raise
        return True

    def _delete_one(self, url: str, delivery: Delivery) -> None:
        batches.delete(
            self._client, self.config, url, [delivery.receipt], f"delete on {delivery.queue!r}"
        )
        self._remember([delivery.receipt])

    def _remember(self, receipts: Sequence[str]) -> None:
        with self._lock:
            for receipt in receipts:
                self._finished[receipt] = None
            while len(self._finished) > _FINISHED_MEMORY:
                self._finished.popitem(last=False)
