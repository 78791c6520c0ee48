"""Jobs RabbitMQ could not route, caught at enqueue instead of dropped.

kombu declares a queue once per connection and remembers it. If the queue is deleted while a
producer runs (an operator recreating it with other arguments, a cleanup script), every later
publish goes to an exchange with no queue bound, and RabbitMQ drops it without a word, even
with publisher confirms. So jobkit publishes its jobs ``mandatory``: RabbitMQ then returns an
unroutable message (``basic.return``, always before the confirm). `Returns` collects the
returns of one producer channel; the sender forgets kombu's declarations and sends again,
which declares the queue (and its binding) anew. A job returned twice raises at enqueue.
`AmqpOps` does the same for dead letters and raw publishes, with its own declaration cache.
"""

from __future__ import annotations

from typing import Any


class Returns:
    """The routing keys of the messages RabbitMQ returned on one channel, in order. Not
    thread-safe: a channel (and the producer that owns it) serves one thread at a time."""

    def __init__(self) -> None:
        self._returned: list[str] = []

    def __call__(self, exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        """py-amqp's ``basic_return`` handler (without one, py-amqp raises from the wait for
        the confirm and leaves that confirm unread on the channel)."""
        self._returned.append(routing_key)

    def take(self) -> list[str]:
        """The routing keys returned since the last call."""
        out, self._returned = self._returned, []
        return out


def returns_of(producer: Any) -> Returns:
    """The `Returns` of `producer`'s channel, registered on first use."""
    channel = producer.channel
    found: Returns | None = getattr(channel, "jobkit_returns", None)
    if found is None:
        found = Returns()
        channel.events["basic_return"].add(found)
        channel.jobkit_returns = found
    return found


def forget_declarations(producer: Any) -> None:
    """Make kombu declare every queue and exchange again on its next publish."""
    producer.connection.declared_entities.clear()
