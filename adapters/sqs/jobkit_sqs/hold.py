"""`Hold`: messages received from one queue and kept invisible while this process works on them.

SQS can read a queue only by receiving from it, and a received message is this reader's only
while its visibility timeout runs: after that another reader may receive it, and this reader's
receipt handle goes stale (real SQS then refuses or ignores it; moto accepts it). A listing,
replay or purge of a large DLQ (10,000 messages is a thousand receive calls) can outlast a fixed
timeout, so the hold is sized to the work and extended while it lasts:

* the first receive is made with `FIRST_HOLD`; from its duration the hold of the rest is sized
  to cover the whole scan (three times the estimated time for the messages the queue reports,
  plus `MARGIN`), at most SQS's 12 hours;
* `keep` extends every held message whose hold ends within `MARGIN`; a message whose
  extension SQS refuses is dropped from the hold (`lost`): its receipt is stale, someone else
  has it, and this reader must neither send nor delete it. Callers `keep` before each step that
  acts on receipts (a send of replayed copies, a delete), so no receipt is used stale.

Not thread-safe: one hold per call of one thread.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from jobkit_sqs import batches, codec
from jobkit_sqs.client import SqsClient, translated
from jobkit_sqs.config import MAX_VISIBILITY, SqsConfig

FIRST_HOLD = 60  # seconds, the hold of the first receive of a scan
MARGIN = 30.0  # seconds: a hold ending sooner is extended before its receipt is used
_MAX_HOLD = int(MAX_VISIBILITY.total_seconds())

Raw = dict[str, Any]


class Hold:
    """The messages of one scan, by MessageId, each with the monotonic time its hold ends."""

    def __init__(self, client: SqsClient, config: SqsConfig, url: str) -> None:
        self._client = client
        self._config = config
        self.url = url
        self.raws: dict[str, Raw] = {}
        self._until: OrderedDict[str, float] = OrderedDict()  # soonest end first
        self.hold_s = FIRST_HOLD
        self.lost: set[str] = set()

    def scan(self, *, until: int, expected: int) -> None:
        """Receive up to `until` messages (each once), sizing the hold after the first call and
        keeping what is held as the scan goes on. Stops at the first empty answer once
        `expected` were seen; before that, retries an empty answer with a 1 s long poll (short
        polls sample on real SQS), three times at most."""
        misses = 0
        calls = 0
        while len(self.raws) < until:
            started = time.monotonic()
            with translated("read a dead-letter queue", self._config):
                response = self._client.get().receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=min(batches.BATCH, until - len(self.raws)),
                    WaitTimeSeconds=1 if misses else 0,
                    VisibilityTimeout=self.hold_s,
                    MessageSystemAttributeNames=codec.SYSTEM_ATTRIBUTES,
                    MessageAttributeNames=["All"],
                )
            ends = started + self.hold_s
            calls += 1
            if calls == 1:
                self._size(time.monotonic() - started, min(until, expected))
            messages = response.get("Messages", [])
            if not messages:
                misses += 1
                if len(self.raws) >= expected or misses >= 3:
                    break
                continue
            for raw in messages:
                message_id = raw["MessageId"]
                self.raws[message_id] = raw  # received again: only the newest receipt is valid
                self._until.pop(message_id, None)
                self._until[message_id] = ends
            self.keep()

    def _size(self, per_call: float, expected: int) -> None:
        estimate = math.ceil(expected / batches.BATCH) * max(per_call, 0.001)
        self.hold_s = int(min(_MAX_HOLD, max(FIRST_HOLD, 3 * estimate + MARGIN)))

    def keep(self, ids: Iterable[str] | None = None) -> None:
        """Extend the holds (of `ids`, else of all) that end within `MARGIN`; drop the messages
        whose extension SQS refuses (see `lost`). Blocks for one batch call per 10 extended."""
        now = time.monotonic()
        if ids is None:
            due = list(itertools.takewhile(lambda i: self._until[i] - now < MARGIN, self._until))
        else:
            due = [i for i in ids if i in self._until and self._until[i] - now < MARGIN]
        if not due:
            return
        receipts = {self.raws[i]["ReceiptHandle"]: i for i in due}
        refused = batches.change_visibility(
            self._client,
            self._config,
            self.url,
            list(receipts),
            self.hold_s,
            "extend the hold on dead letters",
            strict=True,
        )
        for receipt in refused:
            self.drop(receipts[receipt])
            self.lost.add(receipts[receipt])
        ends = now + self.hold_s
        for i in due:
            if i in self._until:
                del self._until[i]
                self._until[i] = ends

    def drop(self, message_id: str) -> None:
        """Forget a message (deleted, or no longer ours)."""
        self.raws.pop(message_id, None)
        self._until.pop(message_id, None)

    def receipts(self, ids: Iterable[str]) -> list[str]:
        return [self.raws[i]["ReceiptHandle"] for i in ids if i in self.raws]

    def release(self, ids: Iterable[str] | None = None) -> None:
        """Make the held messages (of `ids`, else all) visible again and forget them."""
        chosen = list(self.raws if ids is None else ids)
        receipts = self.receipts(chosen)
        if receipts:
            batches.change_visibility(
                self._client, self._config, self.url, receipts, 0, "restore dead letters"
            )
        for i in chosen:
            self.drop(i)
