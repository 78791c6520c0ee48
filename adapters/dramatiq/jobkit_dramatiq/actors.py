"""jobkit jobs as real Dramatiq actors, for Dramatiq's own tools and a plain ``dramatiq`` worker.

`install` (in the module a ``dramatiq`` command loads) builds a Dramatiq broker for the backend
URL, makes it Dramatiq's broker and declares one actor per job, named after the job, on the job's
queue. Each actor takes the jobkit envelope (a JSON string) and runs the job function in the
worker thread, with the job's context. Under a plain ``dramatiq`` worker Dramatiq's own
semantics apply (its Retries middleware is set to no retries; a failed job is re-sent by the
actor itself with the job's `RetryPolicy` backoff while attempts remain, then goes to
Dramatiq's dead-letter queue; time limits are Dramatiq's asynchronous ones). ``jobkit worker``
gives jobkit's semantics (hard time limits, dead letters with reasons): prefer it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq

from jobkit import JobContext
from jobkit.spi import JobSet, decode, invoke_job, job_context
from jobkit_dramatiq._amqp_link import dead_queue_arguments
from jobkit_dramatiq.config import NEVER, DramatiqConfig, parse_url


def native_broker(config: DramatiqConfig) -> Any:
    """A Dramatiq broker on the same queues as the jobkit transport for `config`: the same
    Redis namespace and heartbeat (dead letters never expire), or the same RabbitMQ queue
    arguments (priorities; ``Q.XQ`` without a TTL unless ``dead_ttl`` is set), so both can
    declare and use them."""
    if config.broker == "redis":
        from dramatiq.brokers.redis import RedisBroker

        return RedisBroker(
            url=config.broker_url,
            namespace=config.namespace,
            heartbeat_timeout=int(config.heartbeat.total_seconds() * 1000),
            maintenance_chance=int(config.maintenance_chance * 1_000_000),
            dead_message_ttl=int(NEVER.total_seconds() * 1000),
        )
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    class _Broker(RabbitmqBroker):
        """Dramatiq's broker, declaring ``Q.XQ`` as jobkit does (no TTL by default)."""

        def _declare_xq_queue(self, queue_name: str) -> Any:
            return self.channel.queue_declare(
                queue=f"{queue_name}.XQ", durable=True, arguments=dead_queue_arguments(config)
            )

    return _Broker(
        url=config.broker_url,
        confirm_delivery=True,
        max_priority=config.priorities if config.priorities > 1 else None,
    )


def install(app: JobSet, url: str) -> Any:
    """Make a broker for `url` Dramatiq's global broker and declare `app`'s jobs on it as
    actors; returns the broker. For the module given to the ``dramatiq`` command."""
    broker = native_broker(parse_url(url))
    dramatiq.set_broker(broker)
    declare_actors(app, broker)
    return broker


def declare_actors(app: JobSet, broker: Any) -> dict[str, Any]:
    """One Dramatiq actor per job of `app` (name = job name, queue = job queue), with Dramatiq's
    retries off. Returns them by name."""
    actors = {}
    for job in app.jobs.values():
        decorate = dramatiq.actor(
            actor_name=job.name, queue_name=job.queue, broker=broker, max_retries=0
        )
        actors[job.name] = decorate(_runner(app, job.name, broker))
    return actors


def _runner(app: JobSet, name: str, broker: Any) -> Callable[[str], Any]:
    def run(envelope_text: str) -> Any:
        env = decode(envelope_text)
        job = app.jobs[name]
        attempt = env.attempt + 1
        context = JobContext(
            id=env.id,
            job=env.job,
            queue=env.queue,
            attempt=attempt,
            max_attempts=env.max_attempts,
            idempotency_key=env.idempotency_key,
        )
        try:
            with job_context(context):
                return invoke_job(
                    name, job.fn, tuple(env.args), dict(env.kwargs), asynchronous=job.is_async
                )
        except Exception as exc:
            if attempt >= env.max_attempts or not job.retry.is_transient(exc):
                raise
            delay: timedelta = job.retry.backoff(attempt)
            body = json.dumps(env.with_attempt(attempt).to_dict(), separators=(",", ":"))
            message: Any = dramatiq.Message(
                queue_name=env.queue,
                actor_name=name,
                args=(body,),
                kwargs={},
                options={},
                message_id=env.id,
            )
            broker.enqueue(message, delay=int(delay.total_seconds() * 1000))
            return None

    run.__name__ = name
    return run
