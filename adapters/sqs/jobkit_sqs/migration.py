"""What `jobkit migrate` needs from SQS beyond `receive`: delayed messages before they are due,
and dead letters with their reason.

SQS hands out no message before its delay ends (nor one in flight, as a message released with a
retry backoff is). So, when the backend has a shared job store, every delayed send and every
delayed release also puts an *index entry* on ``<prefix><queue>-jobkit-delayed``: the body, its
due time, the deliveries so far, and a generation token (``jobkit-gen``) that the real message
carries too (the SQS message id stands in for messages sent without one; re-sends keep it).
Nobody but the migrator receives from the index, so its entries stay visible.

Exporting an entry (due later than the export lease) hands out the job with its remaining
delay. Committing it records a *tombstone* ``exported:<job id>:<gen>`` in the job store, then
deletes the entry; when the real message falls due, `receive` finds its tombstone and deletes it
instead of delivering it. An entry whose job is due already is stale (the real message is
visible, or ran): the export deletes it. A job due within the export lease is left to surface
(the tombstone could come too late), and the migration reports it.

A tombstoned message still counts in SQS's own numbers until it falls due, so the commit also
puts a *departure* (job id, due time) on ``<queue>-jobkit-gone-delayed`` or ``-gone-leased``
(by how SQS counts the message: delayed, or in flight as a released retry is); `stats` subtracts
their counts, and the migrator prunes departures once due (the real message surfaces then, and
the next receive drops it).

A migration *into* SQS writes each entry before its message (``jobkit-stay``: the job's stay,
see `jobkit.markers`), so that a kill between them leaves an entry naming a job the re-run
sends again, never a message nobody can export before due. A kill after the send and before
the markers makes the re-run send the job again too. Either way one job has two entries and one
or two real messages, and nothing can tell which. So the first entry of a job's stay that is
committed gets a departure, as above; each further one gets an uncertain one
(``-jobkit-gone-maybe``): `stats` reports up to that many of the delayed messages as
``stale`` (such copies, which are dropped when due) instead of guessing; never more than the
delayed messages beyond the entries still indexed, as each of those stands for a job still
here (a killed migrator's export lease hides entries for a while, and the re-run must wait
for them, not take them for stale copies).

Dead letters: `jobkit_sqs.migration_dead`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from jobkit import JobkitError
from jobkit.spi import (
    Delivery,
    EventKind,
    ExportedJob,
    JobEvent,
    JobStore,
    dedup_key,
    fold_attempts,
)
from jobkit_sqs import batches, codec
from jobkit_sqs.client import SqsClient, translated
from jobkit_sqs.config import INDEX_SUFFIXES, MAX_VISIBILITY, SqsConfig
from jobkit_sqs.queues import DLQ_RETENTION, QueueDirectory

INDEX_SUFFIX, _GONE_DELAYED, _GONE_LEASED, MAYBE_SUFFIX = INDEX_SUFFIXES  # MAYBE: see above
GONE_SUFFIX = {"delayed": _GONE_DELAYED, "leased": _GONE_LEASED}
KIND = "jobkit-kind"  # on an index entry: "delayed" (SQS counts it delayed) or "leased"
STAY = "jobkit-stay"  # on an index entry written by a migration into SQS: the job's stay
_MAX_VISIBILITY_S = int(MAX_VISIBILITY.total_seconds())
_MARGIN_S = 5.0  # an entry is exported only if due this long after its export lease ends

Raw = dict[str, Any]


@dataclass(frozen=True)
class IndexHold:
    """The export lease on an index entry (`ExportedJob.native`)."""

    url: str
    receipt: str
    tombstone: str
    kind: str
    due: float
    stay: int | None = None  # the job's stay, on an entry a migration into SQS wrote


def new_gen() -> str:
    return uuid.uuid4().hex


def tombstone(job_id: str, gen: str) -> str:
    return f"exported:{job_id}:{gen}"


def _tombstone_key(job_id: str, gen: str) -> str:
    return dedup_key(tombstone(job_id, gen), None)


def _departed(job_id: str, stay: int) -> str:
    """The pseudo job id recorded when the first index entry of a job's stay is committed."""
    return f"index-departed:{job_id}#{stay}"


def may_be_indexed(raw: Raw) -> bool:
    """Whether a received message can have had an index entry (sent delayed, or released)."""
    return codec.attr_str(raw, codec.GEN) is not None or (
        codec.prior_of(raw) + codec.receive_count(raw) > 1
    )


class DelayIndex:
    """The index of delayed messages and the tombstones of exported ones. Thread-safe as the
    client and store are; shared by a transport's clones."""

    def __init__(
        self, config: SqsConfig, client: SqsClient, queues: QueueDirectory, store: JobStore
    ) -> None:
        self.config = config
        self._client = client
        self._queues = queues
        self._store = store
        self._urls: dict[str, str] = {}
        self._pruned: set[str] = set()

    # -- writing entries ---------------------------------------------------------------------

    def add(
        self,
        queue: str,
        entries: Sequence[tuple[str, bytes, float, int, str]],
        *,
        kind: str = "delayed",
        stays: Mapping[str, int] | None = None,
    ) -> None:
        """Index (job id, body, due, deliveries so far, gen) entries; `kind` is how SQS counts
        the real messages ("delayed" or "leased"); `stays`: written by a migration into SQS,
        before the messages are sent (the jobs' stays, see the module docstring). Raises
        `JobkitError` if SQS refuses one (the real message is sent: the job then moves when
        due, not before)."""
        if not entries:
            return
        wire: list[batches.Entry] = []
        for index, (job_id, body, due, prior, gen) in enumerate(entries):
            extra = {codec.GEN: codec.string_attr(gen), KIND: codec.string_attr(kind)}
            if stays is not None:
                extra[STAY] = codec.number_attr(stays.get(job_id, 0))
            layout = codec.layout(body, job_id=job_id, due=due, prior=prior, extra=extra)
            wire.append(
                {
                    "Id": str(index),
                    "MessageBody": layout.body,
                    "MessageAttributes": layout.attributes,
                }
            )
        _, failed = batches.send(
            self._client, self.config, self._url(queue), wire, f"index delayed jobs of {queue!r}"
        )
        if failed:
            raise JobkitError(
                f"SQS refused {len(failed)} index entries for delayed jobs of {queue!r} (the "
                f"jobs are queued; they can be migrated once due): {failed[0][1]}"
            )

    # -- the receive side --------------------------------------------------------------------

    def tombstoned(self, raws: Sequence[Raw]) -> set[str]:
        """The SQS message ids among `raws` whose job was migrated away (one store call)."""
        keys = {
            _tombstone_key(codec.job_id_of(raw), codec.gen_of(raw)): raw["MessageId"]
            for raw in raws
            if may_be_indexed(raw)
        }
        if not keys:
            return set()
        return {keys[key] for key in self._store.done(list(keys))}

    # -- export ------------------------------------------------------------------------------

    def export(self, queue: str, *, limit: int, lease: timedelta) -> list[ExportedJob]:
        """Up to `limit` indexed jobs due after the lease ends, each held for `lease`."""
        url = self._lookup(queue, INDEX_SUFFIX)
        if url is None or limit <= 0:
            return []
        if queue not in self._pruned:
            self._pruned.add(queue)
            self._prune_departures(queue)
        hold = lease_seconds(lease)
        out: list[ExportedJob] = []
        stale: list[str] = []
        soon: list[tuple[str, int]] = []
        while len(out) < limit:
            raws = self._receive(url, min(batches.BATCH, limit - len(out)), hold)
            if not raws:
                break
            now = time.time()
            for raw in raws:
                due = codec.attr_float(raw, codec.DUE) or 0.0
                if due <= now:
                    stale.append(raw["ReceiptHandle"])
                elif due <= now + hold + _MARGIN_S:
                    soon.append((raw["ReceiptHandle"], min(_MAX_VISIBILITY_S, int(due - now) + 1)))
                else:
                    out.append(self._exported(queue, url, raw, due - now))
        if stale:
            batches.delete(self._client, self.config, url, stale, f"prune index of {queue!r}")
        for receipt, seconds in soon:  # seen again once stale, and pruned then
            batches.change_visibility(
                self._client, self.config, url, [receipt], seconds, f"index of {queue!r}"
            )
        return out

    def _exported(self, queue: str, url: str, raw: Raw, remaining: float) -> ExportedJob:
        body = codec.body_of(raw)
        prior = codec.prior_of(raw)
        job_id = codec.job_id_of(raw)
        return ExportedJob(
            queue=queue,
            id=job_id,
            body=(fold_attempts(body, prior) or body) if prior else body,
            delay=timedelta(seconds=remaining),
            priority=0,
            dedup_key=key_of(body),
            receipt=raw["ReceiptHandle"],
            native=IndexHold(
                url=url,
                receipt=raw["ReceiptHandle"],
                tombstone=tombstone(job_id, codec.gen_of(raw)),
                kind=codec.attr_str(raw, KIND) or "delayed",
                due=time.time() + remaining,
                stay=_int_or_none(codec.attr_float(raw, STAY)),
            ),
        )

    def commit(self, jobs: Sequence[ExportedJob]) -> None:
        """Tombstones first (the real messages are dropped when due), then the departures,
        then the entries."""
        holds = [job for job in jobs if isinstance(job.native, IndexHold)]
        if not holds:
            return
        certain, maybe = self._sort_departures(holds)
        now = datetime.now(UTC)
        self._store.record(
            [
                JobEvent(job_id=name, job="", kind=EventKind.SUCCEEDED, attempt=0, at=now)
                for name in [j.native.tombstone for j in holds]
                + [_departed(j.id, j.native.stay) for j in certain if j.native.stay is not None]
            ]
        )
        by_suffix: dict[tuple[str, str], list[batches.Entry]] = {}
        for suffix, departing in (("", certain), (MAYBE_SUFFIX, maybe)):
            for job in departing:
                name = suffix or GONE_SUFFIX.get(job.native.kind, GONE_SUFFIX["delayed"])
                entries = by_suffix.setdefault((job.queue, name), [])
                layout = codec.layout(job.id.encode(), job_id=job.id, due=job.native.due)
                body = {"MessageBody": layout.body, "MessageAttributes": layout.attributes}
                entries.append({"Id": str(len(entries)), **body})
        for (queue, suffix), entries in by_suffix.items():
            url = self._url(queue, suffix)
            batches.send(self._client, self.config, url, entries, f"departures of {queue!r}")
        by_url: dict[str, list[str]] = {}
        for job in holds:
            by_url.setdefault(job.native.url, []).append(job.native.receipt)
        for url, receipts in by_url.items():
            batches.delete(self._client, self.config, url, receipts, "remove exported index")

    def _sort_departures(
        self, holds: Sequence[ExportedJob]
    ) -> tuple[list[ExportedJob], list[ExportedJob]]:
        """(certain, uncertain) departures: an entry a producer or worker wrote stands for a
        message sent before it; of the entries a migration into SQS wrote for one stay of a
        job, the first committed stands for the message the completed import sent, and each
        further one for a message that may or may not have been sent (see the docstring)."""
        names = {_departed(j.id, j.native.stay) for j in holds if j.native.stay is not None}
        done = self._store.done([dedup_key(name, None) for name in names]) if names else set()
        taken = {name for name in names if dedup_key(name, None) in done}
        certain: list[ExportedJob] = []
        maybe: list[ExportedJob] = []
        for job in holds:
            name = None if job.native.stay is None else _departed(job.id, job.native.stay)
            if name in taken:
                maybe.append(job)
                continue
            if name is not None:
                taken.add(name)
            certain.append(job)
        return certain, maybe

    def departed(self, queue: str) -> dict[str, int]:
        """Tombstoned messages SQS still counts, by how it counts them ("delayed", "leased");
        "maybe": departures of messages that may never have been sent; "indexed": the entries
        not exported yet (visible, or held by an export lease: a killed migrator's too)."""
        out = {}
        suffixes = [*GONE_SUFFIX.items(), ("maybe", MAYBE_SUFFIX), ("indexed", INDEX_SUFFIX)]
        for kind, suffix in suffixes:
            url = self._lookup(queue, suffix)
            out[kind] = _count(self._client, self.config, url) if url is not None else 0
        return out

    def _prune_departures(self, queue: str) -> None:
        """Delete the departures that are due (their real message surfaces now)."""
        for suffix in [*GONE_SUFFIX.values(), MAYBE_SUFFIX]:
            url = self._lookup(queue, suffix)
            if url is None:
                continue
            later: list[tuple[str, int]] = []
            while True:
                raws = self._receive(url, batches.BATCH, 60)
                if not raws:
                    break
                now = time.time()
                due = [
                    r["ReceiptHandle"] for r in raws if (codec.attr_float(r, codec.DUE) or 0) <= now
                ]
                later.extend(
                    (r["ReceiptHandle"], 0)
                    for r in raws
                    if (codec.attr_float(r, codec.DUE) or 0) > now
                )
                if due:
                    batches.delete(self._client, self.config, url, due, "prune departures")
            if later:
                batches.change_visibility(
                    self._client, self.config, url, [r for r, _ in later], 0, "keep departures"
                )

    def _url(self, queue: str, suffix: str = INDEX_SUFFIX) -> str:
        name = self.config.queue_name(queue) + suffix
        url = self._urls.get(name)
        if url is None:
            attrs = {"MessageRetentionPeriod": str(DLQ_RETENTION)}
            with translated(f"create SQS queue {name!r}", self.config):
                url = self._client.get().create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
            self._urls[name] = url
        return url

    def _lookup(self, queue: str, suffix: str) -> str | None:
        name = self.config.queue_name(queue) + suffix
        if name in self._urls:
            return self._urls[name]
        found = self._queues.url_of(self._client, name)
        if found is not None:
            self._urls[name] = found
        return found

    def _receive(self, url: str, n: int, hold: int) -> list[Raw]:
        return receive_held(self._client, self.config, url, n, hold, "read the delayed index")


def _count(client: SqsClient, config: SqsConfig, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    with translated("read SQS queue attributes", config):
        attrs = client.get().get_queue_attributes(QueueUrl=url, AttributeNames=names)
    values = attrs.get("Attributes", {})
    return sum(int(values.get(name, 0)) for name in names)


def _receive_key(message_id: str, count: int) -> str:
    return dedup_key(f"export-receive:{message_id}:{count}", None)


def uncount_export_receives(store: JobStore, jobs: Sequence[ExportedJob]) -> list[ExportedJob]:
    """`jobs` (exported with a receive) with the receives of earlier, killed exports taken out
    of their attempts (each export records its receive in the store: `record_export_receives`),
    then this export's receive recorded. A kill between a receive and its record still counts
    that receive as an attempt (never fewer attempts than used)."""
    raws = [job.native.native for job in jobs if isinstance(job.native, Delivery)]
    wanted = {
        _receive_key(raw["MessageId"], n): raw["MessageId"]
        for raw in raws
        for n in range(1, codec.receive_count(raw))
    }
    earlier: dict[str, int] = {}
    for key in store.done(list(wanted)) if wanted else set():
        earlier[wanted[key]] = earlier.get(wanted[key], 0) + 1
    now = datetime.now(UTC)
    store.record(
        [
            JobEvent(
                job_id=f"export-receive:{raw['MessageId']}:{codec.receive_count(raw)}",
                job="",
                kind=EventKind.SUCCEEDED,
                attempt=0,
                at=now,
            )
            for raw in raws
        ]
    )
    out = []
    for job in jobs:
        held = job.native
        taken = earlier.get(held.native["MessageId"], 0) if isinstance(held, Delivery) else 0
        if taken:
            used = held.deliveries - 1 - taken
            body = held.body
            job = replace(job, body=(fold_attempts(body, used) or body) if used > 0 else body)
        out.append(job)
    return out


def lease_seconds(lease: timedelta) -> int:
    """An export lease as an SQS visibility timeout: whole seconds, 1 s to 12 h."""
    return min(_MAX_VISIBILITY_S, max(1, int(lease.total_seconds() + 0.999)))


def receive_held(
    client: SqsClient, config: SqsConfig, url: str, n: int, hold: int, what: str
) -> list[Raw]:
    with translated(what, config):
        response = client.get().receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=n,
            WaitTimeSeconds=0,
            VisibilityTimeout=hold,
            MessageSystemAttributeNames=codec.SYSTEM_ATTRIBUTES,
            MessageAttributeNames=["All"],
        )
    messages: list[Raw] = response.get("Messages", [])
    return messages


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def key_of(body: bytes) -> str | None:
    """The idempotency key in an envelope body, if it has one."""
    try:
        value = json.loads(body).get("idempotency_key")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None
