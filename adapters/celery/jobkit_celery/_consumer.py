"""Celery's consumer, with messages it cannot run sent to the dead-letter queue.

Celery acks an undecodable message (dropped, even when the queue has a DLX) and rejects a
message for an unknown task or in an unknown format (dropped on Redis). Here each goes to
``jobkit.dlq.<queue>`` byte-for-byte with the reason, recorded DEAD under the job id recovered
from it (so its handle reports it), then is acked; the worker keeps serving. A job name this
worker does not define is first sent again later for a worker that knows it (rolling deploys).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

import jobkit
from jobkit.spi import salvage
from jobkit_celery._celery_app import runtime_of
from jobkit_celery._wire import envelope_from_message

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")


def _raw_body(message: Any) -> bytes:
    body = message.body
    if isinstance(body, bytes):
        return body
    return str(body).encode()


def _recovered_id(message: Any, body: bytes) -> tuple[str | None, str | None]:
    """The job id and name of a message too broken to decode, read leniently: the task
    message's headers, the broker's message id, or the envelope fields in the body."""
    headers = message.headers if isinstance(message.headers, dict) else {}
    properties = message.properties if isinstance(message.properties, dict) else {}
    found = salvage(body)
    job_id = headers.get("id") or properties.get("correlation_id") or found.id
    job_id = job_id or properties.get("message_id")
    name = headers.get("task") or found.job
    return (
        str(job_id) if job_id else None,
        str(name) if name else None,
    )


class JobkitConsumer(Consumer):  # type: ignore[misc]
    def _dead_letter(self, message: Any, reason: str) -> None:
        runtime = runtime_of(self.app)
        info = message.delivery_info or {}
        queue = str(info.get("routing_key") or info.get("queue") or "default")
        body = _raw_body(message)
        job_id, name = _recovered_id(message, body)
        try:
            env = envelope_from_message(dict(message.headers or {}), body)
            job_id, name, body = env.id, env.job, env.encode()
            queue = env.queue
        except jobkit.SerializationError:
            pass
        if runtime is None:
            logger.critical("no jobkit runtime on this Celery app; cannot dead-letter: %s", reason)
            message.reject(requeue=False)
            return
        try:
            runtime.dead_letter_unrunnable(
                queue=queue, job_id=job_id, job=name, body=body, reason=reason
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
        """A job this worker does not define (e.g. from newer code in a rolling deploy): sent
        again later for a worker that knows it, uncounted; dead-lettered after
        `WorkerOptions.unknown_job_timeout`."""
        name = (message.headers or {}).get("task", "?")
        what = f"job {name!r} is not defined in this app"
        runtime = runtime_of(self.app)
        if runtime is not None:
            try:
                env = envelope_from_message(dict(message.headers or {}), _raw_body(message))
            except jobkit.SerializationError as exc:
                self._dead_letter(message, f"{what}, and its message is malformed: {exc}")
                return
            try:
                if runtime.wait_for_a_worker(env, what):
                    message.ack()
                    return
            except jobkit.BrokerUnavailable:
                logger.exception("cannot send job %r again; leaving it for redelivery", name)
                return
            what = f"{what}; no worker could run it within {runtime.unknown_job_timeout}"
            what += " (unknown-job timeout)"
        self._dead_letter(message, what)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, f"invalid task message: {exc}")
