"""The conformance suite's probe for SQS: reads and writes the queues with boto3 directly,
bypassing `SqsTransport`, to check what the transport claims.

- ``depth``: ApproximateNumberOfMessages + NotVisible + Delayed of the queue (exact on moto);
- ``dead``: the DLQ's messages, received under a short hold and made visible again, oldest first;
- ``inject_raw``: a plain SendMessage, as a foreign producer would (the queue is created as
  jobkit would if missing); the only jobkit convention it
  follows is the ``jobkit-id`` attribute, so the dead letter can be matched to `id` (bytes that
  are not SQS text are base64-encoded, marked ``jobkit-enc``, as jobkit's own codec does);
- ``cleanup``: deletes the queues and their DLQs (DeleteQueue);
- ``unreachable_url``: the same URL with ``endpoint_url`` on a loopback port nobody listens on.

The layout it reads (queue names, attributes) is the one documented in `jobkit_sqs.codec` and
`jobkit_sqs.queues`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from jobkit_sqs import codec
from jobkit_sqs.client import NO_QUEUE, SqsClient, error_code, translated
from jobkit_sqs.config import SqsConfig, parse_url
from jobkit_sqs.queues import QueueDirectory

_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]
_HOLD_S = 10


class SqsProbe:
    """Thread-safe (one botocore client, which is)."""

    def __init__(self, url: str, config: SqsConfig) -> None:
        self.url = url
        self.config = config
        self._client = SqsClient(config)
        self._urls: dict[str, str] = {}
        self._queues = QueueDirectory(config)
        self._lock = threading.Lock()

    def depth(self, queue: str) -> int:
        url = self._url(self.config.queue_name(queue))
        return self._count(url) if url else 0

    def dead(self, queue: str) -> list[Any]:
        from jobkit_conformance.probes import DeadEntry  # the suite's record type

        url = self._url(self.config.dlq_name(queue))
        if url is None:
            return []
        with self._lock:  # one reader of a DLQ at a time: the hold must not hide messages
            raws = self._read_all(url)
        raws.sort(key=_dead_at)
        return [
            DeadEntry(
                id=codec.job_id_of(raw),
                body=codec.body_of(raw),
                reason=codec.attr_str(raw, codec.REASON) or "moved by the SQS redrive policy",
            )
            for raw in raws
        ]

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        url = self._queues.ensure(self._client, queue).url  # as jobkit would create it
        text, b64 = codec.encode_body(body)
        attributes = {codec.ID: codec.string_attr(id)} if id else {}
        if b64:
            attributes[codec.ENC] = codec.string_attr("base64")
        params: dict[str, Any] = {"QueueUrl": url, "MessageBody": text}
        if attributes:
            params["MessageAttributes"] = attributes
        if self.config.fifo:
            key = codec.fifo_id(id or f"raw-{time.time_ns()}")
            params["MessageGroupId"] = key
            params["MessageDeduplicationId"] = key
        with translated(f"inject into {queue!r}", self.config):
            self._client.get().send_message(**params)

    def is_empty(self, queues: Sequence[str]) -> bool:
        """No message in any of `queues` nor in their dead-letter queues."""
        for queue in queues:
            for name in (self.config.queue_name(queue), self.config.dlq_name(queue)):
                url = self._url(name)
                if url is not None and self._count(url):
                    return False
        return True

    def cleanup(self, queues: Sequence[str]) -> None:
        for queue in queues:
            for name in (self.config.queue_name(queue), self.config.dlq_name(queue)):
                url = self._url(name)
                if url is None:
                    continue
                with translated(f"delete SQS queue {name!r}", self.config):
                    try:
                        self._client.get().delete_queue(QueueUrl=url)
                    except ClientError as exc:
                        if error_code(exc) not in NO_QUEUE:
                            raise
                with self._lock:
                    self._urls.pop(name, None)

    def unreachable_url(self) -> str | None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        parts = urlsplit(self.url)
        options = [
            (k, v) for k, v in parse_qsl(parts.query) if k not in ("endpoint_url", "max_retries")
        ]
        options += [("endpoint_url", f"http://127.0.0.1:{port}"), ("max_retries", "0")]
        return f"sqs://{parts.netloc}{parts.path}?{urlencode(options)}"

    def close(self) -> None:
        self._client.close()

    # -- helpers -----------------------------------------------------------------------------

    def _url(self, name: str) -> str | None:
        with self._lock:
            if name in self._urls:
                return self._urls[name]
        with translated(f"look up SQS queue {name!r}", self.config):
            try:
                url: str = self._client.get().get_queue_url(QueueName=name)["QueueUrl"]
            except ClientError as exc:
                if error_code(exc) in NO_QUEUE:
                    return None
                raise
        with self._lock:
            self._urls[name] = url
        return url

    def _count(self, url: str) -> int:
        with translated("read SQS queue attributes", self.config):
            try:
                attrs = self._client.get().get_queue_attributes(
                    QueueUrl=url, AttributeNames=_COUNTS
                )
            except ClientError as exc:
                if error_code(exc) in NO_QUEUE:
                    return 0
                raise
        values = attrs.get("Attributes", {})
        return sum(int(values.get(name, 0)) for name in _COUNTS)

    def _read_all(self, url: str) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        client = self._client.get()
        with translated("read a dead-letter queue", self.config):
            while True:
                got = client.receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=_HOLD_S,
                    MessageSystemAttributeNames=codec.SYSTEM_ATTRIBUTES,
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if not got:
                    break
                for raw in got:
                    seen.setdefault(raw["MessageId"], raw)
            receipts = [raw["ReceiptHandle"] for raw in seen.values()]
            for start in range(0, len(receipts), 10):
                client.change_message_visibility_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": 0}
                        for i, r in enumerate(receipts[start : start + 10])
                    ],
                )
        return list(seen.values())


def _dead_at(raw: dict[str, Any]) -> tuple[float, str]:
    text = codec.attr_str(raw, codec.DEAD_AT)
    when = datetime.fromisoformat(text) if text else codec.sent_at(raw)
    return (when.timestamp() if when else 0.0, str(raw["MessageId"]))


def probe_from_url(url: str) -> SqsProbe:
    return SqsProbe(url, parse_url(url))
