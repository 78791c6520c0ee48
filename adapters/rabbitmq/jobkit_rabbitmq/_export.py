"""The migration primitives of `RabbitTransport` (`jobkit migrate`): export, commit, release and
import. The functions taking a `Session` run in the I/O thread (`Link.call`).

The export lease is a channel of the link's connection that the exporter holds (`Held`):
`basic_get` without ack takes messages from the queue, from its delay queues and (with
`include_dead`) from its DLQ, so no worker receives them while they are held. Looking first
(a passive declare) keeps a missing queue from closing the held channel. `commit` acks them;
`release` puts them back as they were: a delayed message or a dead letter is rejected back to
its queue (a delayed one keeps its expiry), a ready one is published again as an uncounted copy
(a reject would count a delivery on a quorum queue) and then acked.

The lease is not timed: messages stay held until commit, release or the connection is lost
(RabbitMQ's `consumer_timeout` bounds it). A migrator killed while it holds messages closes its
connection and RabbitMQ puts them back where they were; a ready one of a quorum queue then
counts one delivery more (as for a crashed worker), so it is exported next time with one
attempt more used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobkit.spi import ExportedJob, Transport, fold_attempts, message_of
from jobkit_rabbitmq import _wire as wire
from jobkit_rabbitmq import dlq
from jobkit_rabbitmq._link import Link, Session

READY, DELAYED, DEAD = "ready", "delayed", "dead"


@dataclass
class Held:
    """The exporter's channel and the session it belongs to (I/O thread only)."""

    channel: Any = None
    generation: int = -1

    def channel_of(self, s: Session) -> Any:
        if self.channel is None or self.generation != s.generation or not self.channel.is_open:
            self.channel = s.connection.channel()
            self.generation = s.generation
        return self.channel

    def holds(self, s: Session, job: ExportedJob) -> bool:
        """Whether `job` is still held on the live channel (not given back by a lost one)."""
        return (
            self.channel is not None
            and self.channel.is_open
            and self.generation == s.generation
            and _receipt(job)[0] == s.generation
        )


def export(
    link: Link, s: Session, held: Held, queues: Sequence[str], *, limit: int, include_dead: bool
) -> list[ExportedJob]:
    """Up to `limit` messages nobody holds, from each queue's ready messages, then its delay
    queues (shortest first), then its dead letters (with `include_dead`)."""
    config = link.config
    channel = held.channel_of(s)
    now_ms = wire.now_ms()
    out: list[ExportedJob] = []
    for queue in dict.fromkeys(queues):
        sources = [(config.queue_name(queue), READY)]
        sources += [(config.delay_name(queue, ms), DELAYED) for ms in config.delay_levels()]
        sources += [(config.dlq_name(queue), DEAD)] if include_dead else []
        for native, kind in sources:
            if len(out) >= limit:
                return out
            if not wire.count(s, native):  # missing or empty
                continue
            while len(out) < limit:
                method, props, body = channel.basic_get(native, auto_ack=False)
                if method is None:
                    break
                tag = method.delivery_tag
                redelivered = bool(method.redelivered)
                out.append(_exported(queue, kind, tag, props, body, redelivered, s, now_ms))
    return out


def _exported(
    queue: str,
    kind: str,
    tag: int,
    props: Any,
    body: bytes,
    redelivered: bool,
    s: Session,
    now_ms: int,
) -> ExportedJob:
    receipt = f"{s.generation}:{tag}"
    native = (kind, props, body)
    if kind == DEAD:
        letter = dlq.dead_letter(queue, props, body)
        return ExportedJob(
            queue=queue,
            id=letter.id,
            body=fold_attempts(body, letter.deliveries) or body,
            dead_reason=letter.reason,
            receipt=receipt,
            native=native,
        )
    used = wire.prior_of(props)
    if kind == READY:  # a delay queue's count is of exports given back, not of attempts
        used += wire.broker_count(props, redelivered)
    due = wire.due_of(props)
    return ExportedJob(
        queue=queue,
        id=wire.message_id(props, body),
        body=fold_attempts(body, used) or body,
        delay=timedelta(milliseconds=max(0, due - now_ms)),
        priority=props.priority or 0,
        dedup_key=_key_of(body),
        receipt=receipt,
        native=native,
    )


def commit(s: Session, held: Held, jobs: Sequence[ExportedJob]) -> list[str]:
    """Acks what is still held; the ids of the others (given back when a connection was lost:
    a worker may have them now)."""
    lost = []
    for job in jobs:
        if held.holds(s, job):
            held.channel.basic_ack(_receipt(job)[1])
        else:
            lost.append(job.id)
    return lost


def release(link: Link, s: Session, held: Held, jobs: Sequence[ExportedJob]) -> None:
    """Puts back what is still held, as it was (see the module docstring)."""
    mine = [job for job in jobs if held.holds(s, job)]
    copies = []
    for job in mine:
        kind, props, body = job.native
        if kind == READY:
            headers = wire.headers_of(props)
            headers[wire.PRIOR] = wire.prior_of(props) + wire.broker_count(props, False)
            copies.append(
                wire.Outgoing(
                    routing_key=link.config.queue_name(job.queue),
                    body=body,
                    id=job.id,
                    headers={k: v for k, v in headers.items() if not k.startswith("x-")},
                    priority=props.priority or 0,
                )
            )
    wire.publish(link, s, copies)  # copies first (confirmed), then the acks: never lost
    for job in mine:
        tag = _receipt(job)[1]
        if job.native[0] == READY:
            held.channel.basic_ack(tag)
        else:
            held.channel.basic_reject(tag, requeue=True)


def dead_copies(link: Link, jobs: Sequence[ExportedJob]) -> list[wire.Outgoing]:
    """Imported dead letters, for their queues' DLQs: the reason kept; the attempts used are in
    the body already, so they count no deliveries of their own."""
    at = datetime.now(UTC).isoformat()
    return [
        wire.Outgoing(
            routing_key=link.config.dlq_name(job.queue),
            body=job.body,
            id=job.id,
            headers={wire.REASON: job.dead_reason or "", wire.DEAD_AT: at, wire.DELIVERIES: 0},
        )
        for job in jobs
        if job.dead
    ]


class ExportingTransport(Transport):
    """`RabbitTransport`'s migration primitives (see the module docstring)."""

    _link: Link
    _held: Held

    def export(
        self,
        queues: Sequence[str],
        *,
        max_messages: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """Holds up to `max_messages` messages on a channel of the exporter's own until
        `commit_export` or `release_export` (or a lost connection: then they go back); `lease`
        is not used. What this process prefetched for its own receive is given back first."""
        link = self._link

        def run(s: Session) -> list[ExportedJob]:
            if s.consumers:
                self._give_back_inbox(s)
            return export(
                link, s, self._held, queues, limit=max_messages, include_dead=include_dead
            )

        return link.call(run, "export jobs")

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        return self._link.call(lambda s: commit(s, self._held, jobs), "delete exported")

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        self._link.call(lambda s: release(self._link, s, self._held, jobs), "give exported back")

    def import_messages(self, jobs: Sequence[ExportedJob]) -> set[str]:
        """Sends the live jobs (their remaining delay kept) and publishes the dead letters to
        their DLQs, confirmed. Ids are not looked up here: the job store's markers dedup
        (`MigrationSupport.dedup`), so this returns nothing."""
        live = [message_of(job) for job in jobs if not job.dead]
        if live:
            self.send(live)
        dead = [job for job in jobs if job.dead]
        if dead:

            def run(s: Session) -> None:
                for queue in {job.queue for job in dead}:
                    wire.ensure(self._link, s, queue)
                wire.publish(self._link, s, dead_copies(self._link, dead))

            self._link.call(run, f"import {len(dead)} dead letter(s)")
        return set()

    def _give_back_inbox(self, s: Session) -> None:
        raise NotImplementedError


def _receipt(job: ExportedJob) -> tuple[int, int]:
    generation, _, tag = job.receipt.partition(":")
    return int(generation), int(tag)


def _key_of(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    key = data.get("idempotency_key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None
