"""Run a job function to completion in the current thread, awaiting it if it is `async def`.

Shared by jobkit's own job processes and by backends that run jobs in their own worker (Celery),
so an async job has the same meaning everywhere.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from jobkit.errors import Reject


class NotAwaited(Reject):
    """A job declared with ``def`` returned an awaitable: it never ran. Permanent."""


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions (and callables whose ``__call__`` is one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - a callable object's method
    )


def invoke(
    name: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    asynchronous: bool | None = None,
) -> Any:
    """Call `fn` and return its result; an ``async def`` job runs on a fresh event loop.

    Blocks until the job ends. Must not be called from a running event loop (job processes and
    Celery's pool children have none). Raises what the job raises, and `NotAwaited` if a plain
    ``def`` job returns an awaitable (it would otherwise be recorded as succeeded without running).
    `asynchronous`: `is_async(fn)` if the caller knows it (``JobDef.is_async``), else computed.
    """
    if is_async(fn) if asynchronous is None else asynchronous:
        return asyncio.run(fn(*args, **kwargs))
    result = fn(*args, **kwargs)
    if result is not None and inspect.isawaitable(result):
        close = getattr(result, "close", None)
        if callable(close):
            close()  # no "coroutine was never awaited" warning: this error says it instead
        raise NotAwaited(
            f"job {name!r} is declared with def but returned a {type(result).__name__}, so its "
            "work never ran; declare the job function with async def and jobkit awaits it"
        )
    return result
