"""Celery's consumer, with messages it cannot run sent to the dead-letter queue.

Celery acks an undecodable message (dropped, even when the queue has a DLX) and rejects a
message for an unknown task or in an unknown format (dropped on Redis). Here each goes to
``jobkit.dlq.<queue>`` byte-for-byte with the reason, then is acked; the worker keeps serving.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

import jobkit
from jobkit_celery._celery_app import runtime_of
from jobkit_celery._wire import envelope_from_message

logger = logging.getLogger("jobkit.celery")


def _raw_body(message: Any) -> bytes:
    body = message.body
    if isinstance(body, bytes):
        return body
    return str(body).encode()


class JobkitConsumer(Consumer):  # type: ignore[misc]
    def _dead_letter(self, message: Any, reason: str) -> None:
        runtime = runtime_of(self.app)
        info = message.delivery_info or {}
        queue = str(info.get("routing_key") or info.get("queue") or "default")
        body = _raw_body(message)
        job_id = (message.properties or {}).get("message_id")
        try:
            env = envelope_from_message(dict(message.headers or {}), body)
            job_id, body = env.id, env.encode()
            queue = env.queue
        except jobkit.SerializationError:
            pass
        if runtime is None:
            logger.critical("no jobkit runtime on this Celery app; cannot dead-letter: %s", reason)
            message.reject(requeue=False)
            return
        try:
            runtime.ops.dead_letter(
                queue=queue, job_id=job_id, body=body, reason=reason, deliveries=1
            )
        except jobkit.BrokerUnavailable:
            logger.exception("cannot dead-letter a message; leaving it for redelivery")
            return
        logger.error("dead-lettered a message on %r: %s", queue, reason)
        message.ack()

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"undecodable message: {type(exc).__name__}: {exc}")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._dead_letter(message, "not a Celery task message")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        name = (message.headers or {}).get("task", "?")
        self._dead_letter(message, f"unknown job {name!r}: no worker task of that name")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {exc}")
