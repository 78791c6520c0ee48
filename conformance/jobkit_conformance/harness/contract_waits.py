"""The `Transport.receive` wait promise, observed: an empty queue is waited on for the wait
asked (0 and 1.5 s), and a long poll (20 s, the longest SQS allows) ends when a message
arrives 0.5 s in. Part of the ``contract`` scenario (`scenarios_contract`)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from jobkit.spi import Delivery, Message, Transport

from .context import Context
from .observations import HOUR, LONG_WAIT, SLACK, observe


def receive_waits(
    ctx: Context, t: Transport, original: Transport, q: str, held: dict[str, Delivery]
) -> None:
    """Observe ``receive.wait`` on the empty queue `q` through `t`; what the receives return
    is added to `held` (the late message included, collected if the long poll missed it).

    The bounds add how long the broker then took for a call that does not wait (a receive with
    wait 0; the late message's send): a broker slowed by the machine is not a receive that
    overslept, while one that ignores the wait, or polls to its end, still fails."""
    started = time.monotonic()
    nothing = t.receive([q], max_messages=1, wait=timedelta(0), lease=HOUR)
    call = time.monotonic() - started
    observe(
        ctx,
        "receive.wait",
        call <= 1.0 + SLACK / 3,
        f"receive(wait=0) with nothing due returned after {call:.2f} s",
    )
    held.update({d.id: d for d in nothing})
    started = time.monotonic()
    empty = t.receive([q], max_messages=1, wait=timedelta(seconds=1.5), lease=HOUR)
    took = time.monotonic() - started
    observe(
        ctx,
        "receive.wait",
        not empty and 1.5 - 0.25 <= took <= 1.5 + call + SLACK,
        f"receive(wait=1.5 s) with nothing due returned {len(empty)} message(s) after {took:.2f} s "
        f"(a receive with wait 0 took {call:.2f} s just before)",
    )
    held.update({d.id: d for d in empty})
    late, took, send_took = _long_poll_meets_a_late_send(t, original, q)
    observe(
        ctx,
        "receive.wait",
        [d.id for d in late] == ["c-late"] and took < 0.5 + send_took + SLACK + 1,
        f"receive(wait=20 s), a message sent 0.5 s in: returned "
        f"{[d.id for d in late]} after {took:.2f} s (the send took {send_took:.2f} s)",
    )
    held.update({d.id: d for d in late})
    if not late:  # collect the late message, so that what follows counts right

        def arrived() -> bool:
            got = t.receive([q], max_messages=1, wait=timedelta(0), lease=HOUR)
            held.update({d.id: d for d in got})
            return "c-late" in held

        ctx.try_wait(arrived, timeout=SLACK)


def _long_poll_meets_a_late_send(
    t: Transport, original: Transport, q: str
) -> tuple[list[Delivery], float, float]:
    """A receive on `t` with the longest wait, and a message sent to `q` 0.5 s into it (by a
    clone of `original`, in a timer thread): what it returned, how long it took and how long
    the send took."""
    sender = original.clone()
    send_took: list[float] = []

    def send_late() -> None:
        began = time.monotonic()
        sender.send([Message(queue=q, body=b"contract-late", id="c-late")])
        send_took.append(time.monotonic() - began)

    timer = threading.Timer(0.5, send_late)
    started = time.monotonic()
    timer.start()
    late = t.receive([q], max_messages=1, wait=LONG_WAIT, lease=HOUR)
    took = time.monotonic() - started
    timer.join()
    if sender is not original:
        sender.close()
    return list(late), took, send_took[0] if send_took else 0.0
