"""Dead letters on Redis: one JSON record per entry of the list ``jobkit.dlq.<queue>``.

The record keeps the body byte-for-byte (base64), why it got there, when, and after how many
deliveries. On RabbitMQ the same fields travel as message headers (see `_amqp_ops`).
"""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime
from typing import Any

from jobkit import spi


def encode_record(
    *, queue: str, job_id: str | None, body: bytes, reason: str, deliveries: int
) -> str:
    return json.dumps(
        {
            "queue": queue,
            "id": job_id or uuid.uuid4().hex,
            "body": base64.b64encode(body).decode(),
            "reason": reason,
            "dead_at": spi.SystemClock().now().isoformat(),
            "deliveries": deliveries,
        },
        separators=(",", ":"),
    )


def decode_record(raw: bytes | str, queue: str) -> spi.DeadLetter:
    try:
        data: dict[str, Any] = json.loads(raw)
        return spi.DeadLetter(
            queue=queue,
            id=str(data["id"]),
            body=base64.b64decode(data["body"]),
            reason=str(data["reason"]),
            dead_at=datetime.fromisoformat(data["dead_at"]) if data.get("dead_at") else None,
            deliveries=int(data.get("deliveries", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raw_bytes = raw.encode() if isinstance(raw, str) else raw
        return spi.DeadLetter(
            queue=queue,
            id=uuid.uuid5(uuid.NAMESPACE_OID, raw_bytes.hex()).hex,
            body=raw_bytes,
            reason=f"unreadable dead-letter record: {exc}",
            dead_at=None,
        )
