"""Celery's consumer, with messages it cannot run sent to the dead-letter queue.

Celery acks an undecodable message (dropped, even when the queue has a DLX), rejects a
message for an unknown task or in an unknown format (dropped on Redis), and exits on some
malformed task messages (see `_task_message`), which are checked here before Celery reads
them. Here each goes to ``jobkit.dlq.<queue>`` byte-for-byte with the reason, recorded DEAD
under the job id recovered from it (so its handle reports it), then is acked; the worker keeps
serving. A job name this
worker does not define is first sent again later for a worker that knows it (rolling deploys).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

import jobkit
from jobkit.spi import salvage
from jobkit_celery import _task_message
from jobkit_celery._celery_app import runtime_of
from jobkit_celery._handback import hand_back_unstarted
from jobkit_celery._waiting import wait_for_a_worker
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
    _stopping = False

    def stop(self) -> None:
        """Warm shutdown: the consumer closes inside this call (see `on_close`)."""
        self._stopping = True
        super().stop()

    def on_close(self) -> None:
        """Called when the consumer's connection closes: at a warm shutdown (connection still
        open), first hand back the prefetched messages no pool process was given, so they come
        back unflagged (`_handback`); on a lost connection, nothing can be done."""
        if self._stopping:
            try:
                hand_back_unstarted(self, runtime_of(self.app))
            except Exception:  # Celery's own cleanup below must still run
                logger.exception("handing back prefetched jobs failed; RabbitMQ redelivers them")
        super().on_close()

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler of each task message, behind a check of what Celery needs from it:
        a message it cannot build a request from is dead-lettered instead."""
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            problem = _task_message.problem(message)
            if problem is not None:
                self._dead_letter(message, problem)
                return None
            return handle(message)

        return on_task_received

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
                if wait_for_a_worker(runtime, env, what):
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
