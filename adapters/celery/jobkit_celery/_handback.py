"""Messages a stopping Celery worker prefetched but never started, handed back uncounted.

Without a job store, jobkit on Celery+RabbitMQ counts a lost attempt from RabbitMQ's
``redelivered`` flag. At a warm shutdown Celery leaves the messages it prefetched for its busy
pool processes unacked, and RabbitMQ requeues them when the connection closes, marked
redelivered: the next worker would count an attempt none of them used, and dead-letter a
single-attempt job unrun. (With a store, attempts are counted by starts and this does not
arise; on Redis jobkit's transport restores them unflagged.)

So when the consumer closes at a warm shutdown, it first cancels its subscription (each ack
below frees a prefetch slot RabbitMQ would otherwise fill). Then each message that no pool
process was given (it waits for a free process, or sits in the prefork pool's outbound buffer:
it cannot have started) is published again, byte for byte with its properties, to the exchange
and routing key it came through, confirmed by RabbitMQ, and only then acked. The copy is a
fresh delivery; it joins the back of its queue (at its priority). A message already written to
a pool process is left to Celery (it may be running). If the copy cannot be published, the
message is left unacked and comes back redelivered, as before. A crash between the confirmed
copy and the ack leaves both: at least once.

Both are Celery internals, present in every version of the supported range: a request's
``_apply_result`` (None until it is given to the pool) and the prefork pool's
``AsynPool.outbound_buffer``. Without the first, nothing is handed back (as before).
"""

from __future__ import annotations

import logging
from typing import Any

import jobkit
from jobkit_celery._amqp_ops import AmqpOps
from jobkit_celery._runtime import Runtime

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")


_NOT_KNOWN = object()


def _unwritten_task_ids(consumer: Any) -> set[str]:
    """Task ids of the jobs waiting in the prefork pool's outbound buffer."""
    pool = getattr(getattr(consumer, "pool", None), "_pool", None)
    buffer = getattr(pool, "outbound_buffer", None)
    if buffer is None:
        return set()
    return {str(job.correlation_id) for job in tuple(buffer) if job.correlation_id}


def _never_given_to_a_process(request: Any, unwritten: set[str]) -> bool:
    """True if `request` was never handed to the pool (it waits for a free process: no
    ``_apply_result`` yet) or its job still waits in the pool's outbound buffer."""
    applied = getattr(request, "_apply_result", _NOT_KNOWN)
    if applied is _NOT_KNOWN:
        return False
    return applied is None or request.id in unwritten


def hand_back_unstarted(consumer: Any, runtime: Runtime | None) -> int:
    """Publish again, then ack, every prefetched message that was never given to a pool
    process (see the module docstring). Call from the consumer's close at a warm shutdown, in
    its thread, while its connection is open. Returns how many were handed back."""
    if runtime is None or runtime.store is not None or not isinstance(runtime.ops, AmqpOps):
        return 0
    from celery.worker.state import active_requests, reserved_requests

    # No more deliveries to this consumer (Celery cancels it after this anyway): each ack below
    # frees a prefetch slot, which RabbitMQ would fill with a message (the copy just published
    # among them) that then comes back redelivered when the connection closes.
    if consumer.task_consumer is not None:
        consumer.task_consumer.cancel()
    unwritten = _unwritten_task_ids(consumer)
    count = 0
    for request in tuple(reserved_requests):
        message = request.message
        if message.acknowledged or request in active_requests:
            continue
        if not _never_given_to_a_process(request, unwritten):
            continue
        info = message.delivery_info or {}
        try:
            runtime.ops.republish(
                exchange=str(info.get("exchange") or ""),
                routing_key=str(info.get("routing_key") or ""),
                body=message.body,
                properties=dict(message.properties or {}),
            )
        except jobkit.BrokerUnavailable:
            logger.warning(
                "cannot hand back prefetched job %s; RabbitMQ will redeliver it", request.id,
                exc_info=True,
            )  # fmt: skip
            continue
        message.ack()
        count += 1
    if count:
        logger.info("handed back %d prefetched job(s) that never started", count)
    return count
