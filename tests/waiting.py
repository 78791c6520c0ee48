"""Wait on conditions with deadlines, instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll `condition` until it returns something truthy; return it. Fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def wait_for_progress(
    measure: Callable[[], int], goal: int, *, stall: float = 60.0, what: str = ""
) -> int:
    """Poll `measure` until it reaches `goal`; return it. Fail once it has not grown for `stall`
    s: for long runs whose total time depends on the machine's load (a stalled run is the
    failure; a slow one is not)."""
    best, since = measure(), time.monotonic()
    while best < goal:
        time.sleep(0.1)
        value = measure()
        if value > best:
            best, since = value, time.monotonic()
        elif time.monotonic() - since >= stall:
            raise AssertionError(
                f"stalled at {best} of {goal} for {stall} s waiting for {what or measure}"
            )
    return best


def never(condition: Callable[[], object], *, within: float, interval: float = 0.02) -> bool:
    """Poll `condition` for `within` s: False as soon as it is truthy, True if it never was. For
    what must not happen after a cause whose effect would show within a known time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return False
        time.sleep(interval)
    return not condition()
