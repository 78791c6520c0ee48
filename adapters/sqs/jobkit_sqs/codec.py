"""How a jobkit message is laid out on SQS: the body as text, the rest in message attributes.

SQS bodies are Unicode text from a restricted set of characters. A body that is such text in
UTF-8 (every jobkit envelope is) goes as it is; any other bytes go base64-encoded, marked by the
``jobkit-enc`` attribute, so that every body round-trips unchanged.

Attributes (all optional):

- ``jobkit-id``: the jobkit message id (the job id), unless the body is a jobkit envelope that
  starts with that id (``{"v":1,"id":"..."``, as every envelope jobkit encodes does): each
  attribute costs SQS work and bytes on every send and receive (on moto about a tenth of the
  drain rate), and the body says it already;
- ``jobkit-due``: Unix time before which the message must not run (delays beyond SQS's 15 min);
- ``jobkit-prior``: deliveries counted before this SQS message was sent (kept across a re-send,
  so `Delivery.deliveries` = prior + ApproximateReceiveCount);
- ``jobkit-reason``, ``jobkit-dead-at``, ``jobkit-deliveries``: set on dead letters;
- ``jobkit-gen``: the generation token of a message that has an entry in the delayed index
  (see `jobkit_sqs.migration`), kept across re-sends.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

ID = "jobkit-id"
DUE = "jobkit-due"
PRIOR = "jobkit-prior"
ENC = "jobkit-enc"
REASON = "jobkit-reason"
DEAD_AT = "jobkit-dead-at"
DELIVERIES = "jobkit-deliveries"
GEN = "jobkit-gen"

MAX_REASON = 4096
ATTRIBUTE_RESERVE = 8192  # bytes kept free under the size limit for the attributes above
SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "SentTimestamp"]

_SQS_TEXT = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")


# The id at the start of a jobkit envelope's JSON, read without decoding the rest (a body that
# does not start so, or whose id has a character JSON escapes, carries `jobkit-id` instead).
_ENVELOPE_ID = re.compile(r'\{"v":[0-9]+,"id":"([^"\\\x00-\x1f]{1,256})"')


def envelope_id(text: str) -> str | None:
    """The job id a body's text starts with when it is a jobkit envelope's JSON, else None."""
    found = _ENVELOPE_ID.match(text)
    return found.group(1) if found else None


def encode_body(body: bytes) -> tuple[str, bool]:
    """The SQS body for `body`, and whether it had to be base64-encoded."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and _SQS_TEXT.match(text):
        return text, False
    return base64.b64encode(body).decode("ascii"), True


def decode_body(text: str, attributes: dict[str, Any]) -> bytes:
    if _string(attributes, ENC) == "base64":
        return base64.b64decode(text)
    return text.encode("utf-8")


def body_size(text: str) -> int:
    return len(text.encode("utf-8"))


def string_attr(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def number_attr(value: float | int) -> dict[str, str]:
    return {
        "DataType": "Number",
        "StringValue": repr(value) if isinstance(value, float) else str(value),
    }


@dataclass(frozen=True, kw_only=True)
class Layout:
    """A message ready for SendMessage(Batch): body text and message attributes."""

    body: str
    attributes: dict[str, dict[str, str]]


def layout(
    body: bytes,
    *,
    job_id: str,
    due: float | None = None,
    prior: int = 0,
    extra: dict[str, dict[str, str]] | None = None,
) -> Layout:
    text, b64 = encode_body(body)
    attributes: dict[str, dict[str, str]] = {}
    if b64 or envelope_id(text) != job_id:
        attributes[ID] = string_attr(job_id)
    if b64:
        attributes[ENC] = string_attr("base64")
    if due is not None:
        attributes[DUE] = number_attr(round(due, 3))
    if prior:
        attributes[PRIOR] = number_attr(prior)
    attributes.update(extra or {})
    return Layout(body=text, attributes=attributes)


def dead_attributes(reason: str, deliveries: int, at: datetime) -> dict[str, dict[str, str]]:
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return {
        REASON: string_attr(reason or "(no reason given)"),
        DEAD_AT: string_attr(at.astimezone(UTC).isoformat()),
        DELIVERIES: number_attr(deliveries),
    }


def _string(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if not value:
        return None
    text: str | None = value.get("StringValue")
    return text


def attr_str(message: dict[str, Any], name: str) -> str | None:
    return _string(message.get("MessageAttributes") or {}, name)


def attr_float(message: dict[str, Any], name: str) -> float | None:
    text = attr_str(message, name)
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def receive_count(message: dict[str, Any]) -> int:
    return int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))


def sent_at(message: dict[str, Any]) -> datetime | None:
    millis = (message.get("Attributes") or {}).get("SentTimestamp")
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None


def body_of(message: dict[str, Any]) -> bytes:
    return decode_body(message.get("Body", ""), message.get("MessageAttributes") or {})


def job_id_of(message: dict[str, Any]) -> str:
    """``jobkit-id``, else the id the envelope in the body starts with, else the SQS message id
    (a body from another producer)."""
    if found := attr_str(message, ID):
        return found
    if attr_str(message, ENC) is None and (found := envelope_id(message.get("Body", ""))):
        return found
    return str(message["MessageId"])


def gen_of(message: dict[str, Any]) -> str:
    """The generation token of a message: ``jobkit-gen``, else its SQS message id."""
    return attr_str(message, GEN) or str(message["MessageId"])


def prior_of(message: dict[str, Any]) -> int:
    return int(attr_float(message, PRIOR) or 0)


def fifo_id(key: str) -> str:
    """A MessageGroupId / MessageDeduplicationId (<= 128 chars of ``!``..``~``) for `key`;
    longer or other keys are hashed."""
    if 0 < len(key) <= 128 and all("!" <= c <= "~" for c in key):
        return key
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()
