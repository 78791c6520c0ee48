"""Batched SendMessage / DeleteMessage / ChangeMessageVisibility, 10 entries per call.

Batch calls succeed or fail per entry. Only the entries that failed on the server's side are
tried again (twice); what still fails is reported to the caller, who decides (raise, or leave
the message to reappear when its lease ends). Once some entries of a call are confirmed, an
error on a later call (a retry, the next batch) does not hide them: the rest are reported as
failed with that error, so a caller that deletes what it sent never sends it twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from jobkit import JobkitError
from jobkit_sqs.client import GONE, SqsClient, translated
from jobkit_sqs.config import SqsConfig

BATCH = 10
_RETRIES = 2

Entry = dict[str, Any]


def entry_size(entry: Entry) -> int:
    size = len(entry["MessageBody"].encode("utf-8"))
    for name, value in (entry.get("MessageAttributes") or {}).items():
        size += len(name) + len(value["DataType"]) + len(value.get("StringValue", ""))
    return size


def chunks(entries: Sequence[Entry], *, max_bytes: int | None = None) -> Iterator[list[Entry]]:
    """Groups of at most 10 entries (and at most `max_bytes` of payload, when given)."""
    batch: list[Entry] = []
    size = 0
    for entry in entries:
        this = entry_size(entry) if max_bytes is not None else 0
        if batch and (len(batch) == BATCH or (max_bytes is not None and size + this > max_bytes)):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += this
    if batch:
        yield batch


def send(
    client: SqsClient,
    config: SqsConfig,
    url: str,
    entries: Sequence[Entry],
    what: str,
    *,
    on_sent: Callable[[list[Entry]], None] | None = None,
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """SendMessageBatch every entry (each with a unique "Id"); returns (sent, failed+reason).

    `on_sent` is called after each batch call with the entries it confirmed (a caller moving
    messages deletes the originals there, before the next batch). An error before anything was
    confirmed raises; after, the entries not confirmed are returned as failed with the error."""
    if len(entries) == 1:
        return _send_one(client, config, url, entries[0], what, on_sent)
    sent: list[Entry] = []
    failed: list[tuple[Entry, str]] = []
    groups = list(chunks(entries, max_bytes=config.max_message_bytes))
    for index, batch in enumerate(groups):
        try:
            ok, bad = _call(client, config, "send_message_batch", url, batch, what)
        except JobkitError as exc:
            if not sent:
                raise
            rest = [e for group in groups[index:] for e in group]
            failed.extend((e, f"not sent: {exc}") for e in rest)
            return sent, failed
        if on_sent is not None and ok:
            on_sent(ok)
        sent.extend(ok)
        failed.extend(bad)
    return sent, failed


def _send_one(
    client: SqsClient,
    config: SqsConfig,
    url: str,
    entry: Entry,
    what: str,
    on_sent: Callable[[list[Entry]], None] | None,
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    """`send` of one entry, as SendMessage: one enqueue's call, which SQS (and moto) serve at
    less cost than a batch of one (measured on moto: 0.94 of boto3's ``send_message`` rate as
    a batch). A refusal raises, as an error before anything was confirmed does in `send`."""
    params = {key: value for key, value in entry.items() if key != "Id"}
    with translated(what, config):
        client.get().send_message(QueueUrl=url, **params)
    if on_sent is not None:
        on_sent([entry])
    return [entry], []


def delete(
    client: SqsClient, config: SqsConfig, url: str, receipts: Sequence[str], what: str
) -> list[tuple[str, str]]:
    """DeleteMessageBatch; a receipt that is gone already counts as deleted. Returns failures."""
    unique = list(dict.fromkeys(receipts))
    entries = [{"Id": str(i), "ReceiptHandle": r} for i, r in enumerate(unique)]
    failures: list[tuple[str, str]] = []
    for batch in chunks(entries):
        _, bad = _call(client, config, "delete_message_batch", url, batch, what)
        failures.extend((e["ReceiptHandle"], reason) for e, reason in bad)
    return failures


def change_visibility(
    client: SqsClient,
    config: SqsConfig,
    url: str,
    receipts: Sequence[str],
    seconds: int,
    what: str,
    *,
    strict: bool = False,
) -> list[str]:
    """ChangeMessageVisibilityBatch. Best effort unless `strict`: a message that is gone is
    skipped. `strict` (extending a hold): the receipts that could not be changed, gone ones
    included (their receipt is stale: the message was deleted or received by someone else)."""
    unique = list(dict.fromkeys(receipts))
    entries = [
        {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
        for i, r in enumerate(unique)
    ]
    lost: list[str] = []
    for batch in chunks(entries):
        _, bad = _call(
            client, config, "change_message_visibility_batch", url, batch, what, gone_ok=not strict
        )
        lost.extend(e["ReceiptHandle"] for e, _ in bad)
    return lost


def _call(
    client: SqsClient,
    config: SqsConfig,
    method: str,
    url: str,
    batch: list[Entry],
    what: str,
    *,
    gone_ok: bool = True,
) -> tuple[list[Entry], list[tuple[Entry, str]]]:
    by_id = {e["Id"]: e for e in batch}
    pending = list(batch)
    ok: list[Entry] = []
    bad: list[tuple[Entry, str]] = []
    for attempt in range(_RETRIES + 1):
        try:
            with translated(what, config):
                response = getattr(client.get(), method)(QueueUrl=url, Entries=pending)
        except JobkitError as exc:
            if attempt == 0:
                raise
            # some entries of this batch are confirmed: report them, and the rest as failed
            return ok, [*bad, *((e, f"retry failed: {exc}") for e in pending)]
        ok.extend(by_id[s["Id"]] for s in response.get("Successful", []))
        retry: list[Entry] = []
        for failure in response.get("Failed", []):
            entry = by_id[failure["Id"]]
            code = failure.get("Code", "")
            if method != "send_message_batch" and code in GONE and gone_ok:
                ok.append(entry)  # already deleted / no longer in flight: nothing to do
            elif not failure.get("SenderFault") and code not in GONE and attempt < _RETRIES:
                retry.append(entry)
            else:
                bad.append((entry, f"{code}: {failure.get('Message', '')}"))
        if not retry:
            return ok, bad
        pending = retry
    raise JobkitError(f"could not {what}: retries exhausted")  # pragma: no cover
