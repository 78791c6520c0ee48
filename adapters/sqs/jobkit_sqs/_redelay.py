"""Re-delaying messages that surfaced before their due time (delays beyond SQS's 15 minutes)."""

from __future__ import annotations

import math
from typing import Any

from jobkit_sqs import batches, codec
from jobkit_sqs.client import SqsClient
from jobkit_sqs.config import SqsConfig


def redelay(
    client: SqsClient,
    config: SqsConfig,
    hop: int,
    queue: str,
    url: str,
    raws: list[dict[str, Any]],
    now: float,
) -> None:
    """Re-send messages that surfaced before their due time with the remaining delay, and
    delete each original once its copy is confirmed, batch by batch (send first: a crash in
    between duplicates, never loses). An entry SQS refuses, or a batch that fails, leaves
    its original where it is, leased: it surfaces again and is re-delayed then; an original
    is never deleted without its copy, nor re-sent once its copy is confirmed. The copy
    keeps `jobkit-prior`, so this receive is not counted as a delivery."""
    receipts: dict[str, str] = {}
    wire: list[batches.Entry] = []
    for index, raw in enumerate(raws):
        attributes = {
            name: {"DataType": value["DataType"], "StringValue": value["StringValue"]}
            for name, value in (raw.get("MessageAttributes") or {}).items()
            if "StringValue" in value
        }
        attributes.setdefault(codec.GEN, codec.string_attr(codec.gen_of(raw)))
        remaining = (codec.attr_float(raw, codec.DUE) or now) - now
        receipts[str(index)] = raw["ReceiptHandle"]
        wire.append(
            {
                "Id": str(index),
                "MessageBody": raw["Body"],
                "MessageAttributes": attributes,
                "DelaySeconds": min(hop, max(1, math.ceil(remaining))),
            }
        )

    def delete_originals(sent: list[batches.Entry]) -> None:
        batches.delete(
            client,
            config,
            url,
            [receipts[e["Id"]] for e in sent],
            f"re-delay on {queue!r}",
        )

    batches.send(
        client,
        config,
        url,
        wire,
        f"re-delay messages on {queue!r}",
        on_sent=delete_originals,
    )
