"""The Celery app jobkit runs on: hardened settings, and every jobkit job as a real task.

Hardened settings (``profile=hardened``, the default) and why:

* ``task_acks_late=True``: ack after the job ran, so a killed worker does not lose it.
* ``task_reject_on_worker_lost=True``: a killed pool child requeues its message.
* ``worker_prefetch_multiplier=prefetch`` (1): a worker holds no more than it runs.
* JSON only (``task_serializer``/``accept_content``): never pickle.
* ``task_acks_on_failure=True``: a failed job has already been retried or dead-lettered by
  jobkit, so Celery may ack it; ``task_acks_on_timeout=False``: a hard time limit requeues the
  message and jobkit counts the attempt (crash-loop guard).
* Redis: ``visibility_timeout`` small (60 s default) because the worker refreshes what it
  holds (`_redis_transport`); kombu's sweep runs every ``restore_interval`` (<= 1 s).
* RabbitMQ: publisher confirms; every queue has a dead-letter exchange.

``profile=native`` keeps Celery's defaults (early ack, no reject on worker lost); it exists to
show that the conformance suite catches the loss.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu.entity import Exchange, Queue

from jobkit_celery._amqp_ops import delay_queue_arguments, work_queue_arguments
from jobkit_celery._names import delay_queue_name
from jobkit_celery._redis_ops import PRIORITY_STEPS
from jobkit_celery._settings import Settings
from jobkit_celery._versions import check_versions

if TYPE_CHECKING:
    from jobkit_celery._runtime import Runtime


def work_queue(settings: Settings, name: str) -> Queue:
    if settings.broker == "amqp":
        return Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments=work_queue_arguments(name),
        )
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def delay_queue(name: str, ttl_ms: int) -> Queue:
    qname = delay_queue_name(name, ttl_ms)
    return Queue(
        qname,
        Exchange("", type="direct"),
        routing_key=qname,
        durable=True,
        queue_arguments=delay_queue_arguments(name, ttl_ms),
    )


def build_celery(settings: Settings, name: str = "jobkit") -> Celery:
    """The Celery app for `settings`. Raises `ConfigurationError` on a Celery or kombu version
    outside the supported range (`_versions`)."""
    check_versions()
    celery = Celery(name, set_as_current=False)
    transport_options: dict[str, Any]
    if settings.broker == "redis":
        transport_options = {
            "visibility_timeout": settings.visibility_timeout.total_seconds(),
            "unacked_restore_interval": settings.restore_every,
            "unacked_restore_throttle": 1,
            # kombu's sweep holds a Redis mutex that expires after 300 s by default: a worker
            # SIGKILLed while holding it stopped every restore of dead workers' messages for
            # 5 minutes (seen: 19 of 2,000 jobs stalled in the handoff test). The scan takes
            # milliseconds; a sweep that outlives this only duplicates, never loses.
            "unacked_mutex_expire": max(5, math.ceil(2 * settings.restore_every)),
            "priority_steps": PRIORITY_STEPS,
            # the longest wait of one receive (`_redis_transport.Channel.jobkit_poll`)
            "jobkit_poll": settings.poll.total_seconds(),
        }
    else:
        transport_options = {"confirm_publish": True}
    # RabbitMQ requeues a dead (or SIGSTOPped) worker's messages when its connection is
    # declared dead: after about two missed heartbeats.
    heartbeat = max(2.0, min(60.0, settings.visibility_timeout.total_seconds()))
    conf: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # Ride out a broker that is away for any time: never give up reconnecting.
        "broker_connection_max_retries": None,
        "broker_heartbeat": heartbeat,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "result_backend": None,
        "task_ignore_result": True,
        "task_default_queue": "default",
        "task_create_missing_queues": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": settings.events,
        "task_send_sent_event": settings.events,
        "worker_enable_remote_control": True,
        "task_queues": [work_queue(settings, "default")],
    }
    if settings.broker == "redis":
        conf["broker_transport"] = "jobkit_celery._redis_transport:Transport"
    if settings.hardened:
        conf.update(
            task_acks_late=True,
            task_reject_on_worker_lost=True,
            task_acks_on_failure=True,
            task_acks_on_timeout=False,
            worker_prefetch_multiplier=settings.prefetch,
            worker_cancel_long_running_tasks_on_connection_loss=True,
            worker_consumer="jobkit_celery._consumer:JobkitConsumer",
        )
    celery.conf.update(conf)
    return celery


def attach_runtime(celery: Celery, runtime: Runtime) -> None:
    celery.jobkit_runtime = runtime


def runtime_of(celery: Any) -> Runtime | None:
    return getattr(celery, "jobkit_runtime", None)
