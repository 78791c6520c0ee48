"""Celery's task request, with a hard time limit that requeues on every supported Celery.

jobkit counts a job stopped by its hard time limit as an attempt when the message comes back
(crash-loop guard), so the message must be requeued, not acked. Celery >= 5.7 does that with
``task_acks_on_timeout=False``. Older ones have only ``task_acks_on_failure_or_timeout``,
which must stay True (a failed job is already retried or dead-lettered by jobkit; a rejected
one would be dead-lettered a second time by RabbitMQ), and so ack the message: lost. There this
request requeues it instead.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.exceptions import TimeLimitExceeded
from celery.worker import state
from celery.worker.request import Request

from jobkit_celery._versions import splits_acks_on_timeout

logger = logging.getLogger("jobkit.celery")

_SPLIT = splits_acks_on_timeout()


class JobkitRequest(Request):  # type: ignore[misc]
    def on_failure(self, exc_info: Any, *args: Any, **kwargs: Any) -> Any:
        """Celery < 5.7 reports a hard time limit here first (and acks): requeue instead."""
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # billiard's ExceptionWithTraceback wraps it
        if not _SPLIT and self.task.acks_late and isinstance(exc, TimeLimitExceeded):
            self.reject(requeue=True)  # Celery's ack after this is a no-op
        return super().on_failure(exc_info, *args, **kwargs)

    def on_timeout(self, soft: bool, timeout: float) -> Any:
        if soft or _SPLIT or not self.task.acks_late:
            return super().on_timeout(soft, timeout)
        state.task_ready(self)
        logger.error("Hard time limit (%ss) exceeded for %s[%s]", timeout, self.name, self.id)
        self.reject(requeue=True)  # a no-op if `on_failure` requeued it already
        return None
