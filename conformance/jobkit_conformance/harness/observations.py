"""Recording what a contract scenario observed: one ``observe`` operation per promise checked
(a key of `jobkit_conformance.promises`), whether it held and what was seen; the checkers in
`jobkit_conformance.checkers.contract` judge them. Shared by `scenarios_contract`,
`contract_waits` and `scenarios_stats`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from jobkit.spi import Backend, QueueStats, Transport
from jobkit_conformance.history import F, OpType

from .context import Context

HOUR = timedelta(hours=1)
LONG_WAIT = timedelta(seconds=20)  # the longest long poll SQS allows
SLACK = 3.0  # seconds a blocking call may overrun on a loaded machine


def observe(ctx: Context, promise: str, ok: bool, observed: str, **extra: Any) -> bool:
    ctx.record(
        "client",
        OpType.OK,
        F.OBSERVE,
        value={"promise": promise, "ok": bool(ok), "observed": observed, **extra},
    )
    return ok


def observe_second_close(ctx: Context, promise: str, closed: Transport | Backend) -> None:
    """`close` is idempotent: a second call on a closed instance raises nothing."""
    try:
        closed.close()
    except Exception as exc:
        observe(ctx, promise, False, f"a second close() raised {type(exc).__name__}: {exc}")
    else:
        observe(ctx, promise, True, "close() twice raised nothing")


def row(rows: Sequence[QueueStats], queue: str) -> QueueStats | None:
    return next((s for s in rows if s.queue == queue), None)
