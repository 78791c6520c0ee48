"""A probe for the conformance suite: reads and writes SQS with boto3 directly, bypassing the
transport, to check what the transport claims.

``depth`` counts every message in the queue (ready, in flight and delayed); ``dead`` every
message in its DLQ; ``inject_raw`` puts a body on the queue as a foreign producer would (no
jobkit attributes; bytes that are not SQS text are base64-encoded the way jobkit does it).
"""

from __future__ import annotations

from collections.abc import Sequence

from jobkit_sqs import codec
from jobkit_sqs.client import SqsClient, translated
from jobkit_sqs.config import SqsConfig, parse_url
from jobkit_sqs.queues import QueueDirectory

_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


class SqsProbe:
    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._client = SqsClient(config)
        self._queues = QueueDirectory(config)

    def depth(self, queue: str) -> int:
        pair = self._queues.lookup(self._client, queue)
        return self._count(pair.url) if pair else 0

    def dead(self, queue: str) -> int:
        pair = self._queues.lookup(self._client, queue)
        return self._count(pair.dlq_url) if pair else 0

    def inject_raw(self, queue: str, body: bytes) -> None:
        pair = self._queues.ensure(self._client, queue)
        text, b64 = codec.encode_body(body)
        params: dict[str, object] = {"QueueUrl": pair.url, "MessageBody": text}
        if b64:
            params["MessageAttributes"] = {codec.ENC: codec.string_attr("base64")}
        if self.config.fifo:
            key = codec.fifo_id(f"raw:{hash(body)}:{id(params)}")
            params["MessageGroupId"] = key
            params["MessageDeduplicationId"] = key
        with translated(f"inject into {queue!r}", self.config):
            self._client.get().send_message(**params)

    def is_empty(self, queues: Sequence[str]) -> bool:
        """No message left in any of `queues` nor in their dead-letter queues."""
        return all(self.depth(q) == 0 and self.dead(q) == 0 for q in queues)

    def close(self) -> None:
        self._client.close()

    def _count(self, url: str) -> int:
        with translated("read SQS queue attributes", self.config):
            attrs = self._client.get().get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS)
        values = attrs.get("Attributes", {})
        return sum(int(values.get(name, 0)) for name in _COUNTS)


def probe_from_url(url: str) -> SqsProbe:
    return SqsProbe(parse_url(url))
