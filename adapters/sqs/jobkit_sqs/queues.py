"""Queue URLs, and idempotent creation of each queue with its dead-letter queue.

A jobkit queue ``q`` is the SQS queue ``<prefix>q`` whose redrive policy points at
``<prefix>q-dlq`` (``.fifo`` appended to both on FIFO). Creation is idempotent: SQS returns the
existing queue when the attributes match; when an existing queue has other attributes (made by
hand, or by another configuration) it is used as it is and left unchanged.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

from botocore.exceptions import ClientError  # type: ignore[import-untyped]

from jobkit import ConfigurationError
from jobkit_sqs.client import NO_QUEUE, SqsClient, error_code, translated
from jobkit_sqs.config import SqsConfig

DLQ_RETENTION = 1_209_600  # 14 days, the SQS maximum


@dataclass(frozen=True)
class QueuePair:
    url: str
    dlq_url: str


class QueueDirectory:
    """Resolves (and creates) queues; caches URLs. Thread-safe; shared by clones."""

    def __init__(self, config: SqsConfig) -> None:
        self.config = config
        self._pairs: dict[str, QueuePair] = {}
        self._lock = threading.Lock()

    def ensure(self, client: SqsClient, queue: str) -> QueuePair:
        """The queue and its DLQ, created if missing (unless ``create=false``)."""
        pair = self._pairs.get(queue)
        if pair is not None:
            return pair
        cfg = self.config
        name, dlq_name = cfg.queue_name(queue), cfg.dlq_name(queue)
        if cfg.create:
            dlq_url = self._create(client, dlq_name, {"MessageRetentionPeriod": str(DLQ_RETENTION)})
            attributes = {
                "VisibilityTimeout": str(int(cfg.visibility.total_seconds())),
                "MaximumMessageSize": str(cfg.max_message_bytes),
            }
            if cfg.max_receives:
                arn = self._arn(client, dlq_url)
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": arn, "maxReceiveCount": str(cfg.max_receives)}
                )
            url = self._create(client, name, attributes)
        else:
            found_dlq = self._url(client, dlq_name)
            found = self._url(client, name)
            if found is None or found_dlq is None:
                raise ConfigurationError(
                    f"SQS queue {name!r} or {dlq_name!r} does not exist and create=false; "
                    "create both (with a redrive policy) or drop create=false"
                )
            url, dlq_url = found, found_dlq
        pair = QueuePair(url=url, dlq_url=dlq_url)
        with self._lock:
            self._pairs[queue] = pair
        return pair

    def forget(self, queue: str) -> None:
        """Drop the cached URLs of `queue` (it was deleted): the next `ensure` creates it
        again (SQS refuses that for 60 s after a deletion: the error says so)."""
        with self._lock:
            self._pairs.pop(queue, None)

    def lookup(self, client: SqsClient, queue: str) -> QueuePair | None:
        """The queue and its DLQ if both exist; never creates."""
        pair = self._pairs.get(queue)
        if pair is not None:
            return pair
        url = self._url(client, self.config.queue_name(queue))
        dlq_url = self._url(client, self.config.dlq_name(queue))
        if url is None or dlq_url is None:
            return None
        pair = QueuePair(url=url, dlq_url=dlq_url)
        with self._lock:
            self._pairs[queue] = pair
        return pair

    def known(self, client: SqsClient) -> list[str]:
        """The jobkit queues that exist under this prefix, sorted."""
        names: set[str] = set()
        kwargs: dict[str, object] = {"QueueNamePrefix": self.config.prefix, "MaxResults": 1000}
        with translated("list SQS queues", self.config):
            while True:
                page = client.get().list_queues(**kwargs)
                for url in page.get("QueueUrls", []):
                    queue = self.config.jobkit_queue(url.rsplit("/", 1)[-1])
                    if queue is not None:
                        names.add(queue)
                token = page.get("NextToken")
                if not token:
                    break
                kwargs["NextToken"] = token
        return sorted(names)

    def _create(self, client: SqsClient, name: str, attributes: dict[str, str]) -> str:
        attrs = dict(attributes)
        if self.config.fifo:
            attrs["FifoQueue"] = "true"
            attrs["ContentBasedDeduplication"] = "false"
        with translated(f"create SQS queue {name!r}", self.config):
            try:
                url: str = client.get().create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
                return url
            except ClientError as exc:
                if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                    raise
            url = client.get().get_queue_url(QueueName=name)["QueueUrl"]
            return url

    def url_of(self, client: SqsClient, name: str) -> str | None:
        """The URL of the SQS queue `name` (a full native name), None if it does not exist."""
        return self._url(client, name)

    def _url(self, client: SqsClient, name: str) -> str | None:
        with translated(f"look up SQS queue {name!r}", self.config):
            try:
                url: str = client.get().get_queue_url(QueueName=name)["QueueUrl"]
                return url
            except ClientError as exc:
                if error_code(exc) in NO_QUEUE:
                    return None
                raise

    def _arn(self, client: SqsClient, url: str) -> str:
        with translated("read a queue ARN", self.config):
            attrs = client.get().get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
            arn: str = attrs["Attributes"]["QueueArn"]
            return arn
