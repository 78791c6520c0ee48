"""What runs in the I/O thread (`Link.call`): the queue layout, confirmed publishing, consuming
and settling. Every function here takes the `Session` and must only be called through
`Link.call`.

Layout, for the jobkit queue ``q`` with the default prefix:

- ``jobkit.q``: durable; quorum (``x-delivery-limit``, dead-lettering at least once) or classic
  (``x-max-priority``); its dead-letter exchange is the default exchange with the routing key
  ``jobkit.q.dlq``, so a message the broker gives up on (the delivery limit) lands there;
- ``jobkit.q.dlq``: durable classic queue of dead letters (headers ``jobkit-reason``,
  ``jobkit-dead-at``, ``jobkit-deliveries``);
- ``jobkit.q.delay.<ms>``: durable quorum queues with one queue-level ``x-message-ttl`` each,
  dead-lettering back to ``jobkit.q`` at least once (``x-dead-letter-strategy=at-least-once``,
  which needs ``x-overflow=reject-publish``). One TTL per queue, so no message waits behind a
  longer one (per-message TTLs block at the head of the line). Quorum, not classic: a classic
  queue dead-letters at most once, and drops what expires while its target is not available
  yet (a node starting up after a restart); at least once, an expired message stays in the
  delay queue until the target has confirmed it;
- ``jobkit..queues``: one message per jobkit queue name, so that `stats()` can list them.

Message properties: ``message_id`` is the jobkit id, persistent, ``priority`` on classic
queues; headers ``jobkit-prior`` (deliveries already used before this copy was published) and
``jobkit-due`` (epoch ms; a message that surfaces before it is sent on through the delay
queues, uncounted).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pika
from pika import exceptions as px

from jobkit import BrokerUnavailable, JobkitError
from jobkit_rabbitmq._link import Arrival, Link, Session

PRIOR = "jobkit-prior"
DUE = "jobkit-due"
REASON = "jobkit-reason"
DEAD_AT = "jobkit-dead-at"
DELIVERIES = "jobkit-deliveries"
_CONFIRM_CHUNK = 2000


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    routing_key: str  # a native queue name (published through the default exchange)
    body: bytes
    id: str
    headers: dict[str, Any]
    priority: int = 0


def properties(out: Outgoing) -> pika.BasicProperties:
    return pika.BasicProperties(
        message_id=out.id,
        delivery_mode=2,
        priority=out.priority or None,
        headers=out.headers or None,
    )


def headers_of(props: Any) -> dict[str, Any]:
    """A copy of the message's headers, to change and publish again."""
    return dict(props.headers or {}) if props is not None else {}


def _header(props: Any, name: str, default: Any) -> Any:
    """One header's value, read without copying the headers (done several times for every
    delivery, in the worker's receiver thread)."""
    headers = props.headers if props is not None else None
    return headers.get(name, default) if headers else default


def broker_count(props: Any, redelivered: bool) -> int:
    """Returns the broker counted for this message: quorum ``x-delivery-count``, else 1 for a
    redelivered message of a classic queue (which counts no further)."""
    count = _header(props, "x-delivery-count", None)
    if isinstance(count, int):
        return count
    return 1 if redelivered else 0


def message_id(props: Any, body: bytes) -> str:
    """The jobkit id: ``message_id``, or for a message published without one (by a foreign
    producer) a stable name derived from its body."""
    return str(props.message_id or "body-" + hashlib.sha256(body).hexdigest()[:24])


def due_of(props: Any) -> int:
    """When the message falls due (``jobkit-due``, epoch ms); 0 for one due at once."""
    value = _header(props, DUE, 0)
    return value if isinstance(value, int) else 0


def now_ms() -> int:
    """The time in epoch ms, rounded down (what `jobkit-due` is compared with)."""
    return int(time.time() * 1000)


def due_after(delay_s: float) -> int:
    """The ``jobkit-due`` of a message delayed `delay_s` from now: rounded up, so that a
    comparison with `now_ms` (rounded down) never finds it due before the delay has passed."""
    return math.ceil((time.time() + delay_s) * 1000)


def prior_of(props: Any) -> int:
    value = _header(props, PRIOR, 0)
    return value if isinstance(value, int) else 0


# -- topology --------------------------------------------------------------------------------


def ensure(link: Link, s: Session, queue: str) -> str:
    """Declare the queue and its DLQ (once per link); returns the native name."""
    config = link.config
    name = config.queue_name(queue)
    if name in link.declared:
        return name
    dlq = config.dlq_name(queue)
    args: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    if config.queue_type == "quorum":
        args |= {
            "x-queue-type": "quorum",
            "x-delivery-limit": config.delivery_limit,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }
    else:
        args |= {"x-queue-type": "classic", "x-max-priority": config.max_priority}
    channel = s.admin_channel()
    channel.queue_declare(dlq, durable=True, arguments={"x-queue-type": "classic"})
    channel.queue_declare(name, durable=True, arguments=args)
    _register(link, s, queue)
    link.declared.add(name)
    return name


def ensure_delays(link: Link, s: Session, queue: str) -> None:
    config = link.config
    marker = config.delay_name(queue, config.delay_levels()[0])
    if marker in link.declared:
        return
    main = ensure(link, s, queue)
    channel = s.admin_channel()
    for ms in reversed(config.delay_levels()):  # the marker (smallest) last: all exist once it does
        channel.queue_declare(
            config.delay_name(queue, ms),
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-message-ttl": ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": main,
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            },
        )
    link.declared.add(marker)


def _register(link: Link, s: Session, queue: str) -> None:
    directory = link.config.directory_name
    if directory not in link.declared:
        s.admin_channel().queue_declare(
            directory, durable=True, arguments={"x-queue-type": "classic"}
        )
        link.declared.add(directory)
    if queue in directory_names(link, s):
        return
    publish(link, s, [Outgoing(routing_key=directory, body=queue.encode(), id=queue, headers={})])


def directory_names(link: Link, s: Session) -> list[str]:
    bodies = peek_all(s, link.config.directory_name, limit=100_000)
    return list(dict.fromkeys(body.decode() for _, body in bodies))


def peek_all(s: Session, native: str, *, limit: int) -> list[tuple[Any, bytes]]:
    """Up to `limit` (properties, body) of `native`, oldest first, left in place: taken with
    basic_get on a channel of their own, which is then closed (the broker puts them back in
    their places). For classic queues only (a quorum queue would count the look)."""
    channel = s.connection.channel()
    got: list[tuple[Any, bytes]] = []
    try:
        while len(got) < limit:
            method, props, body = channel.basic_get(native, auto_ack=False)
            if method is None:
                break
            got.append((props, body))
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return []
    finally:
        if channel.is_open:
            channel.close()
    return got


def count(s: Session, native: str) -> int | None:
    """Ready messages in `native`; None if there is no such queue."""
    try:
        frame = s.admin_channel().queue_declare(native, passive=True)
    except px.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return None
        raise
    return int(frame.method.message_count)


# -- publishing ------------------------------------------------------------------------------


def publish(link: Link, s: Session, items: Sequence[Outgoing]) -> None:
    """Publish persistent messages with publisher confirms, waiting for the confirms per chunk
    of 2,000 (not per message; one message: `_publish_one`). Raises `BrokerUnavailable` when
    the broker nacks or does not confirm within `confirm_timeout`, `JobkitError` when a message
    was unroutable."""
    if len(items) == 1:
        _publish_one(link, s, items[0])
        return
    impl = s.publish._impl
    for start in range(0, len(items), _CONFIRM_CHUNK):
        chunk = items[start : start + _CONFIRM_CHUNK]
        first = s.next_tag + 1
        for out in chunk:
            impl.basic_publish("", out.routing_key, out.body, properties(out), mandatory=True)
            s.next_tag += 1
        last = s.next_tag
        deadline = time.monotonic() + link.config.confirm_timeout
        while s.confirmed < last:
            if time.monotonic() > deadline:
                raise BrokerUnavailable(
                    f"RabbitMQ did not confirm {len(chunk)} messages within "
                    f"{link.config.confirm_timeout:g} s; they may not be stored"
                )
            s.connection.process_data_events(time_limit=0.05)
        nacked = {t for t in s.nacked if first <= t <= last}
        s.nacked -= nacked
        if nacked:
            raise _refused(len(nacked), len(chunk))
        returned = {out.id for out in chunk} & s.returned
        s.returned -= returned
        if returned:
            raise _unroutable(link, chunk, len(returned))


def _publish_one(link: Link, s: Session, out: Outgoing) -> None:
    """One message on the blocking confirm channel, which waits for its confirm the way pika
    does for its own callers. The batch path's wait for one message cost a timer, a wake-up
    through pika's interrupt socket and a poll more: a fifth of the CPU of a single enqueue.
    The wait has no deadline of its own: a broker that blocks publishers (an alarm) has the
    connection closed after `blocked_connection_timeout` (= `confirm_timeout`), one that stops
    answering after missed heartbeats; either way the call raises `BrokerUnavailable`."""
    try:
        s.confirm.basic_publish("", out.routing_key, out.body, properties(out), mandatory=True)
    except px.NackError as exc:
        raise _refused(1, 1) from exc
    except px.UnroutableError as exc:
        raise _unroutable(link, [out], 1) from exc


def _refused(nacked: int, sent: int) -> BrokerUnavailable:
    return BrokerUnavailable(f"RabbitMQ refused {nacked} of {sent} messages")


def _unroutable(link: Link, sent: Sequence[Outgoing], returned: int) -> JobkitError:
    """The error for messages RabbitMQ returned; their queues are declared again next time."""
    for out in sent:
        link.declared.discard(out.routing_key)
    return JobkitError(
        f"RabbitMQ had no queue for {returned} message(s) (was a queue deleted while in use?); "
        "nothing of them was stored: send again"
    )


# -- consuming and settling ------------------------------------------------------------------


def consume(link: Link, s: Session, queues: Sequence[str], want: int) -> int:
    """Consume from every queue of `queues` (declaring them), with a prefetch window matched
    to what the caller can hold: the deliveries it has taken and not yet settled plus `want`
    (or the fixed `prefetch` option). What waits in the inbox is not counted: it is part of
    `want` already (counting it let the window grow by `want` on every call while the inbox
    was full: 244 consumers after 30,000 jobs). A window that must grow gets one more consumer
    with the difference as its prefetch (basic.qos applies only to consumers started after it,
    and cancelling a consumer would requeue, and so count, what is in transit). So the window
    is at most the caller's capacity plus its acks not yet flushed. Returns the session's
    generation."""
    fixed = link.config.prefetch
    with link.arrived:
        waiting = sum(1 for a in link.inbox if a.generation == s.generation)
    taken = max(0, len(s.unsettled) - waiting)
    needed = fixed or min(65_535, max(1, taken + want))
    for queue in queues:
        native = ensure(link, s, queue)
        window = s.windows.get(native, 0)
        if window >= needed or (fixed and window):
            continue

        def on_message(ch: Any, method: Any, props: Any, body: bytes, queue: str = queue) -> None:
            s.unsettled[method.delivery_tag] = queue
            link.deliver(
                Arrival(
                    generation=s.generation,
                    tag=method.delivery_tag,
                    queue=queue,
                    properties=props,
                    body=body,
                    redelivered=bool(method.redelivered),
                )
            )

        s.consume.basic_qos(prefetch_count=needed - window)
        tag = s.consume.basic_consume(native, on_message, auto_ack=False)
        s.consumers.append(tag)
        s.tags[tag] = native
        s.windows[native] = needed
    return s.generation


def stop_consuming(s: Session) -> None:
    """Cancel every consumer of the session. A message in transit at that moment is given back
    by pika (counted by a quorum queue); what reached the inbox stays held."""
    while s.consumers:
        s.consume.basic_cancel(s.consumers.pop())
    s.windows.clear()
    s.tags.clear()


def ack(s: Session, generation: int, tags: Sequence[int]) -> None:
    """Ack the deliveries still held under this session; stale ones are skipped.

    The oldest held deliveries, when all of them are among `tags`, are acked with one frame
    (``multiple``; pika's blocking channel writes and flushes every ack it is given, which cost
    the supervisor about a fifth of its time in a drain). That acks exactly them: every delivery
    of the consume channel is in `s.unsettled` from its arrival to its settling, in delivery-tag
    order (tags rise on a channel, and arrivals are recorded in the order pika delivers them).
    """
    if generation != s.generation:
        return
    acking = {tag for tag in tags if tag in s.unsettled}
    if not acking:
        return
    oldest = list(itertools.takewhile(acking.__contains__, s.unsettled))
    for tag in acking:
        del s.unsettled[tag]
    if oldest:
        s.consume.basic_ack(oldest[-1], multiple=len(oldest) > 1)
    for tag in sorted(acking.difference(oldest)):
        s.consume.basic_ack(tag)


def requeue(s: Session, generation: int, tag: int) -> None:
    if generation == s.generation and s.unsettled.pop(tag, None) is not None:
        s.consume.basic_nack(tag, requeue=True)


def held(s: Session, generation: int, tag: int) -> bool:
    return generation == s.generation and tag in s.unsettled
