"""Names of the broker objects jobkit adds next to Celery's own queues."""

from __future__ import annotations


def dlq_name(queue: str) -> str:
    """The dead-letter queue of `queue`: a Redis list, or a RabbitMQ queue."""
    return f"jobkit.dlq.{queue}"


def delayed_name(queue: str) -> str:
    """Redis: the sorted set of delayed messages for `queue` (score = due time)."""
    return f"jobkit.delayed.{queue}"


def delay_queue_name(queue: str, ttl_ms: int) -> str:
    """RabbitMQ: the TTL queue that holds `queue`'s messages delayed by `ttl_ms`."""
    return f"jobkit.delay.{queue}.{ttl_ms}"


def bell_name(queue: str) -> str:
    """Redis: the small capped stream producers touch after they push onto `queue`'s lists, which
    an idle worker waits on (a "doorbell"; its entries carry nothing)."""
    return f"jobkit.bell.{queue}"
