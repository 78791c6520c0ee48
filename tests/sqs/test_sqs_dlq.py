"""The SQS DLQ at scale: holds sized and extended, one copy per job, re-delay batches that fail
part way. On moto (which accepts stale receipt handles, so the
tests count messages and ids instead of relying on a refused receipt).

The DLQ of 10,000 runs under the full profile only (``JOBKIT_TEST_PROFILE=full``); the default
tests use a few hundred letters through the same code paths.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from jobkit_sqs import SqsTransport, batches, codec, hold
from jobkit_sqs.client import SqsClient

from tests.servers.moto import MotoServer
from tests.sqs.conftest import queue_url


@pytest.fixture
def url(moto: MotoServer, prefix: str) -> str:
    return moto.url(prefix=prefix)


def _fill_dlq(transport: SqsTransport, sqs: Any, prefix: str, n: int, *, copies: int = 1) -> str:
    """`n` dead letters (job ids 0..n-1, each `copies` times) put straight on the DLQ, as
    `dead_letter` writes them."""
    transport.replay("q")  # makes the queue pair (nothing to replay yet)
    dlq = queue_url(sqs, f"{prefix}q-dlq")
    entries = []
    for i in range(n):
        for c in range(copies):
            layout = codec.layout(f'{{"n":{i}}}'.encode(), job_id=f"job-{i}")
            attrs = dict(layout.attributes)
            attrs[codec.REASON] = {"DataType": "String", "StringValue": "boom"}
            entries.append(
                {"Id": f"{i}-{c}", "MessageBody": layout.body, "MessageAttributes": attrs}
            )
    for start in range(0, len(entries), 10):
        answer = sqs.send_message_batch(QueueUrl=dlq, Entries=entries[start : start + 10])
        assert not answer.get("Failed")
    return dlq


def _drain_ids(sqs: Any, url: str) -> Counter[str]:
    """Every message on `url`, by job id (received and deleted)."""
    seen: Counter[str] = Counter()
    empty = 0
    while empty < 2:
        got = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=300,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if got else empty + 1
        for raw in got:
            seen[codec.job_id_of(raw)] += 1
        if got:
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["ReceiptHandle"]} for i, r in enumerate(got)
                ],
            )
    return seen


def _visible(sqs: Any, url: str) -> tuple[int, int]:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def test_hold_is_extended_while_it_lasts(
    transport: SqsTransport, sqs: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a 2 s hold, kept from 1.5 s before it ends: without extension the letters come back
    monkeypatch.setattr(hold, "FIRST_HOLD", 2)
    monkeypatch.setattr(hold, "MARGIN", 1.5)
    dlq = _fill_dlq(transport, sqs, prefix, 30)
    config = transport.config
    held = hold.Hold(SqsClient(config), config, dlq)
    held.scan(until=1000, expected=30)
    assert len(held.raws) == 30
    deadline = time.monotonic() + 5  # 2.5 holds
    while time.monotonic() < deadline:
        held.keep()
        time.sleep(0.3)  # the time passing is the fault
    assert _visible(sqs, dlq) == (0, 30)
    assert held.lost == set()
    held.release()
    assert _visible(sqs, dlq) == (30, 0)


def test_hold_is_sized_to_the_scan(transport: SqsTransport, sqs: Any, prefix: str) -> None:
    dlq = _fill_dlq(transport, sqs, prefix, 20)
    config = transport.config
    held = hold.Hold(SqsClient(config), config, dlq)
    held.scan(until=1_000_000, expected=1_000_000)  # as if the DLQ were huge
    assert held.hold_s > hold.FIRST_HOLD  # three times the estimated scan, plus the margin
    held.release()


def test_replay_sends_one_copy_per_job_and_removes_every_letter_of_it(
    transport: SqsTransport, sqs: Any, prefix: str
) -> None:
    _fill_dlq(transport, sqs, prefix, 40, copies=2)  # an earlier replay left its letters
    assert transport.replay("q") == 40
    assert transport.stats(["q"])[0].dead == 0
    seen = _drain_ids(sqs, queue_url(sqs, f"{prefix}q"))
    assert seen == Counter({f"job-{i}": 1 for i in range(40)})


def test_listing_leaves_every_letter_in_place(
    transport: SqsTransport, sqs: Any, prefix: str
) -> None:
    dlq = _fill_dlq(transport, sqs, prefix, 250)
    letters = transport.dead_letters("q", limit=10_000)
    assert sorted(letter.id for letter in letters) == sorted(f"job-{i}" for i in range(250))
    assert _visible(sqs, dlq) == (250, 0)  # made visible again


def test_send_batch_failing_part_way_reports_what_was_confirmed(
    transport: SqsTransport, sqs: Any, prefix: str
) -> None:
    transport.replay("q")  # makes the queue pair
    target = queue_url(sqs, f"{prefix}q")
    entries: list[batches.Entry] = [{"Id": str(i), "MessageBody": f"m{i}"} for i in range(10)]
    # the second call is refused as a whole (two entries with one Id)
    entries += [{"Id": "dup", "MessageBody": "a"}, {"Id": "dup", "MessageBody": "b"}]
    confirmed: list[str] = []
    sent, failed = batches.send(
        SqsClient(transport.config),
        transport.config,
        target,
        entries,
        "test",
        on_sent=lambda ok: confirmed.extend(e["Id"] for e in ok),
    )
    assert sorted(confirmed) == sorted(str(i) for i in range(10))
    assert [e["Id"] for e in sent] == [str(i) for i in range(10)]
    assert [e["Id"] for e, _ in failed] == ["dup", "dup"]
    assert sum(_drain_ids_plain(sqs, target).values()) == 10


def _drain_ids_plain(sqs: Any, url: str) -> Counter[str]:
    seen: Counter[str] = Counter()
    while got := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for raw in got:
            seen[raw["Body"]] += 1
            sqs.delete_message(QueueUrl=url, ReceiptHandle=raw["ReceiptHandle"])
    return seen


def test_redelay_of_many_early_messages_neither_loses_nor_duplicates(
    transport: SqsTransport, sqs: Any, prefix: str
) -> None:
    transport.replay("q")  # makes the queue pair
    target = queue_url(sqs, f"{prefix}q")
    due = time.time() + 2
    for start in range(0, 35, 10):
        sqs.send_message_batch(
            QueueUrl=target,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": f"late-{i}",
                    "MessageAttributes": {
                        "jobkit-id": {"DataType": "String", "StringValue": f"late-{i}"},
                        "jobkit-due": {"DataType": "Number", "StringValue": str(due)},
                    },
                }
                for i in range(start, min(start + 10, 35))
            ],
        )
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < 35 and time.monotonic() < deadline:
        got += transport.receive(
            ["q"], max_messages=10, wait=timedelta(seconds=1), lease=timedelta(seconds=60)
        )
    assert sorted(d.id for d in got) == sorted(f"late-{i}" for i in range(35))
    assert transport.receive(["q"], max_messages=10, wait=timedelta(seconds=1),
                             lease=timedelta(seconds=60)) == []  # fmt: skip
    assert _visible(sqs, target) == (0, 35)  # the 35 leased copies, no original left


@pytest.mark.full
def test_dlq_of_ten_thousand_lists_replays_and_purges_exactly(
    transport: SqsTransport, sqs: Any, prefix: str
) -> None:
    n = 10_000
    dlq = _fill_dlq(transport, sqs, prefix, n)
    letters = transport.dead_letters("q", limit=n)
    assert len({letter.id for letter in letters}) == n
    assert _visible(sqs, dlq) == (n, 0)
    assert transport.replay("q", ids=[f"job-{i}" for i in range(0, n, 2)]) == n // 2
    assert transport.purge("q") == n // 2
    seen = _drain_ids(sqs, queue_url(sqs, f"{prefix}q"))
    assert seen == Counter({f"job-{i}": 1 for i in range(0, n, 2)})
