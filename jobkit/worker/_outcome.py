"""The decision for one finished attempt: ack, release with a delay, or dead-letter. Pure.

Also how an `Outcome` travels from the job process to the supervisor: `encode` / `decode`."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from jobkit.envelope import Envelope
from jobkit.policy import RetryPolicy


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What a job process reported for one attempt (or what the supervisor concluded)."""

    ok: bool
    result: Any = None
    error: str | None = None
    transient: bool = True
    retry_delay: float | None = None  # seconds, from `Retry(delay=...)`
    not_started: bool = False  # the job process was told to hold and did not start the job


def encode(outcome: Outcome) -> bytes:
    """The outcome's JSON frame: only the fields that differ from their defaults (one is
    decoded per job in the supervisor, whose one core bounds a worker's drain rate)."""
    data: dict[str, Any] = {"ok": outcome.ok}
    if outcome.result is not None:
        data["result"] = outcome.result
    if outcome.error is not None:
        data["error"] = outcome.error
    if not outcome.transient:
        data["transient"] = False
    if outcome.retry_delay is not None:
        data["retry_delay"] = outcome.retry_delay
    if outcome.not_started:
        data["not_started"] = True
    return json.dumps(data, separators=(",", ":")).encode()


_SUCCEEDED = Outcome(ok=True)
_SUCCEEDED_FRAME = encode(_SUCCEEDED)  # a job that returned None


def decode(frame: bytes) -> Outcome:
    """The `Outcome` of an `encode` frame; a missing field has its default."""
    if frame == _SUCCEEDED_FRAME:
        return _SUCCEEDED  # frozen: one shared instance
    data = json.loads(frame)
    return Outcome(
        ok=bool(data["ok"]),
        result=data.get("result"),
        error=data.get("error"),
        transient=bool(data.get("transient", True)),
        retry_delay=data.get("retry_delay"),
        not_started=bool(data.get("not_started", False)),
    )


class Action(StrEnum):
    ACK = "ack"
    RELEASE = "release"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, kw_only=True)
class Decision:
    action: Action
    delay: timedelta = timedelta(0)
    reason: str = ""


def decide(
    envelope: Envelope,
    attempt: int,
    outcome: Outcome,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """Ack a success; retry a transient failure while attempts remain; dead-letter the rest.

    `attempt` is 1-based; `envelope.max_attempts` (not the policy's) bounds it, so a job keeps the
    policy it was enqueued with across deploys.
    """
    if outcome.ok:
        return Decision(action=Action.ACK)
    error = outcome.error or "failed"
    if not outcome.transient:
        return Decision(action=Action.DEAD_LETTER, reason=f"permanent error: {error}")
    if attempt >= envelope.max_attempts:
        return Decision(
            action=Action.DEAD_LETTER,
            reason=f"gave up after {attempt} of {envelope.max_attempts} attempts: {error}",
        )
    if outcome.retry_delay is not None:
        delay = timedelta(seconds=max(outcome.retry_delay, 0.0))
    else:
        delay = policy.backoff(attempt, rng)
    return Decision(action=Action.RELEASE, delay=delay, reason=error)
