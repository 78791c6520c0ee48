"""Dead letters of a RabbitMQ queue (``<prefix><queue>.dlq``, a classic queue): reading them,
replaying and purging. The functions taking a `Session` run in the I/O thread (`Link.call`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from jobkit.spi import DeadLetter, replay_body
from jobkit_rabbitmq import _wire as wire
from jobkit_rabbitmq._link import Link, Session


def replay(link: Link, s: Session, queue: str, ids: Sequence[str] | None) -> int:
    """Publishes each chosen dead letter (all, or those with `ids`) to `queue` with its attempts
    reset, waits for the confirms, then acks them on the DLQ; the others go back in place when
    the channel closes. Returns how many were replayed."""
    wanted = set(ids) if ids is not None else None
    main = wire.ensure(link, s, queue)
    channel = s.connection.channel()
    try:
        chosen = []
        while True:
            method, props, body = channel.basic_get(link.config.dlq_name(queue), auto_ack=False)
            if method is None:
                break
            letter = dead_letter(queue, props, body)
            if wanted is None or letter.id in wanted:
                chosen.append((method.delivery_tag, letter, props))
        copies = [
            wire.Outgoing(
                routing_key=main,
                body=replay_body(letter.body),
                id=letter.id,
                headers={},
                priority=props.priority or 0,
            )
            for _, letter, props in chosen
        ]
        wire.publish(link, s, copies)
        for tag, _, _ in chosen:
            channel.basic_ack(tag)
        return len(chosen)
    finally:
        if channel.is_open:
            channel.close()


def purge(link: Link, s: Session, queue: str) -> int:
    native = link.config.dlq_name(queue)
    if wire.count(s, native) is None:
        return 0
    return int(s.admin_channel().queue_purge(native).method.message_count)


def dead_letter(queue: str, props: Any, body: bytes) -> DeadLetter:
    headers = wire.headers_of(props)
    deaths = headers.get("x-death") or [{}]
    death = deaths[0] if isinstance(deaths, list) and deaths else {}
    reason = headers.get(wire.REASON)
    if not isinstance(reason, str):
        reason = f"dead-lettered by RabbitMQ ({death.get('reason', 'unknown')})"
        if death.get("reason") == "delivery_limit":
            reason = "RabbitMQ's delivery limit (x-delivery-limit) was reached: a crash loop?"
    at = headers.get(wire.DEAD_AT)
    dead_at = datetime.fromisoformat(at) if isinstance(at, str) else death.get("time")
    if isinstance(dead_at, datetime) and dead_at.tzinfo is None:
        dead_at = dead_at.replace(tzinfo=UTC)
    deliveries = headers.get(wire.DELIVERIES, death.get("count", 0))
    return DeadLetter(
        queue=queue,
        id=wire.message_id(props, body),
        body=body,
        reason=reason,
        dead_at=dead_at if isinstance(dead_at, datetime) else None,
        deliveries=deliveries if isinstance(deliveries, int) else 0,
    )
