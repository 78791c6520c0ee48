"""Jobs no worker here can run yet (a name this worker does not define, or an envelope from a
newer jobkit): sent again after a delay, uncounted, for a worker that can (rolling deploys);
dead-lettered once they have waited `unknown_job_timeout` since they became due."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from jobkit import spi
from jobkit.spi import Envelope, salvage

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")

UNKNOWN_JOB_RETRY = timedelta(seconds=30)
_SHORTEST_RETRY = timedelta(seconds=1)
WAITING_SINCE = "jobkit-waiting-since"  # envelope header: when a job nobody knew became due


class Sender(Protocol):
    """What waiting needs of the runtime."""

    clock: spi.Clock
    unknown_job_timeout: timedelta

    def send(self, envelopes: Sequence[Envelope]) -> None: ...

    def send_raw(self, env: Envelope, meta: dict[str, Any]) -> None: ...


def _parse_time(text: Any) -> datetime | None:
    try:
        value = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if value is not None and value.tzinfo is not None else None


def _retry_delay(
    sender: Sender, env: Envelope, since: datetime, now: datetime, what: str
) -> timedelta | None:
    """How long a job nobody here can run waits before it is offered again; None once it has
    waited `unknown_job_timeout`."""
    waited = now - since
    timeout = sender.unknown_job_timeout
    if waited >= timeout:
        return None
    delay = max(min(UNKNOWN_JOB_RETRY, timeout - waited), _SHORTEST_RETRY)
    logger.warning(
        "job %s[%s] on %s: %s; sent again in %s for a worker that can run it "
        "(dead-lettered once it has waited %s; it has waited %s)",
        env.job, env.id, env.queue, what, delay, timeout, waited,
    )  # fmt: skip
    return delay


def wait_for_a_worker(sender: Sender, env: Envelope, what: str) -> bool:
    """A job this worker cannot run (its name is not defined here): send it again after a
    delay, without counting an attempt, for a worker that knows it; True if sent. False once it
    has waited `unknown_job_timeout` since it became due: then dead-letter it. Raises
    `BrokerUnavailable`."""
    now = sender.clock.now()
    since = _parse_time(env.headers.get(WAITING_SINCE)) or env.not_before or env.enqueued_at
    delay = _retry_delay(sender, env, since, now, what)
    if delay is None:
        return False
    headers = {**env.headers, WAITING_SINCE: since.isoformat()}
    sender.send([replace(env, not_before=now + delay, headers=headers)])
    return True


def wait_newer_for_a_worker(sender: Sender, env: Envelope, meta: dict[str, Any], what: str) -> bool:
    """`wait_for_a_worker` for a message whose jobkit header is from a newer jobkit: `env` holds
    what this jobkit could read (id, name, arguments, queue); the header is sent on unchanged
    but for when it started waiting."""
    now = sender.clock.now()
    found = salvage(json.dumps({**meta, "id": env.id, "job": env.job}))
    since = _parse_time(meta.get(WAITING_SINCE)) or found.since or now
    delay = _retry_delay(sender, env, since, now, what)
    if delay is None:
        return False
    waiting = {**meta, WAITING_SINCE: since.isoformat()}
    sender.send_raw(replace(env, not_before=now + delay), waiting)
    return True
