"""Scenarios that exercise the interfaces' promises one by one, with values across the range a
user may ask for (not only the short ones that keep the other scenarios fast):

* ``contract``: the `Transport` methods called directly (for backends built on a transport):
  `receive`'s max_messages, wait and lease, `extend` with a lease of an hour, `release` with a
  delay, `dead_letter`'s reason, `dead_letters`' limit, `replay` by id, `purge`, `stats` for
  given queues and for all, `clone`, `close`;
* ``stats``: the numbers `Backend.stats` returns and `jobkit status` / `jobkit dlq list` print,
  while a worker holds a job, others wait, some are delayed and some are dead.

Each observation is recorded as an ``observe`` operation: the promise (a key of
`jobkit_conformance.promises`), whether it held and what was observed; the checkers in
`jobkit_conformance.checkers.contract` judge them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from jobkit.errors import JobkitError
from jobkit.spi import Delivery, Message, QueueStats, Transport, TransportBackend

from .context import Context
from .contract_waits import receive_waits
from .observations import HOUR, SLACK, observe, observe_second_close, row
from .settings import NotApplicable


def _counts(s: QueueStats | None) -> str:
    if s is None:
        return "no row for the queue"
    return f"ready={s.ready} in_flight={s.in_flight} delayed={s.delayed} dead={s.dead}"


def _stats_until(
    ctx: Context, read: Callable[[], QueueStats | None], want: dict[str, int], timeout: float = 5
) -> tuple[bool, QueueStats | None]:
    """Read until the counts are `want` (brokers that approximate converge), at most `timeout`.

    Keys are `QueueStats` fields, ``waiting`` (ready + delayed: a message whose delay runs out
    moves from one to the other at a moment the harness does not control) and ``<field>_min``
    (at least that many)."""
    last: list[QueueStats | None] = [None]

    def value(s: QueueStats, key: str) -> int:
        if key == "waiting":
            return s.ready + s.delayed
        return int(getattr(s, key.removesuffix("_min")))

    def holds(s: QueueStats, key: str, expected: int) -> bool:
        got = value(s, key)
        return got >= expected if key.endswith("_min") else got == expected

    def matches() -> bool:
        last[0] = read()
        got = last[0]
        return got is not None and all(holds(got, k, v) for k, v in want.items())

    ok = ctx.try_wait(matches, timeout=timeout)
    return ok, last[0]


# -- the Transport, method by method ------------------------------------------------------------


def contract(ctx: Context) -> None:
    backend = ctx.suite.backend
    if not isinstance(backend, TransportBackend):
        raise NotApplicable(
            f"{backend.capabilities.name} implements Backend directly, not Transport: its "
            "promises are checked through the worker scenarios and `stats`"
        )
    original = backend.transport
    t = original.clone()
    try:
        _transport(ctx, original, t)
    finally:
        t.close()


def _transport(ctx: Context, original: Transport, t: Transport) -> None:
    q = ctx.queue
    n = 40

    def stats() -> QueueStats | None:
        return row(t.stats([q]), q)

    def want(promise: str, what: str, **counts: int) -> None:
        ok, got = _stats_until(ctx, stats, counts)
        expected = " ".join(f"{k}={v}" for k, v in counts.items())
        observe(ctx, promise, ok, f"{what}: stats said {_counts(got)}, expected {expected}")

    # send: a batch of n, plus one delayed an hour and one delayed 2 s (where delays are claimed)
    max_delay = original.capabilities.max_delay
    delays = max_delay is None or max_delay >= HOUR
    original.send([Message(queue=q, body=f"contract-{i}".encode(), id=f"c{i}") for i in range(n)])
    if delays:
        t.send(
            [
                Message(queue=q, body=b"contract-hour", id="c-hour", delay=HOUR),
                Message(queue=q, body=b"contract-soon", id="c-soon", delay=timedelta(seconds=2)),
            ]
        )
    # (the 2 s one may fall due while these counts are read: ready and delayed are summed)
    want(
        "stats.counts",
        f"after sending {n} messages and {2 if delays else 0} delayed ones",
        waiting=n + (2 if delays else 0),
        delayed_min=1 if delays else 0,
        ready_min=n,
        in_flight=0,
        dead=0,
    )

    # peek: at most `limit` of the queue's own bodies, without leasing or counting a delivery
    sent = {f"contract-{i}".encode() for i in range(n)} | {b"contract-hour", b"contract-soon"}
    peeked = t.peek([q], limit=5)
    strange = [b for b in peeked if b not in sent]
    observe(
        ctx,
        "peek",
        len(peeked) <= 5 and not strange,
        f"peek(limit=5) of {n} ready messages returned {len(peeked)} bodies"
        + (f", {len(strange)} not on the queue" if strange else ""),
    )

    held: dict[str, Delivery] = {}
    # receive: max_messages honoured (1, 3, 25), with a lease of an hour
    for asked in (1, 3, 25):
        got = t.receive([q], max_messages=asked, wait=timedelta(seconds=1), lease=HOUR)
        if asked == 1 and got:
            observe(
                ctx,
                "peek",
                got[0].deliveries == 1,
                f"after a peek, the first receive of {got[0].id} counted "
                f"deliveries={got[0].deliveries}",
            )
        observe(
            ctx,
            "receive.max_messages",
            1 <= len(got) <= asked,
            f"receive(max_messages={asked}) with {n - len(held)} ready returned {len(got)}",
        )
        repeated = [d for d in got if d.id in held]
        observe(
            ctx,
            "receive.lease",
            not repeated,
            f"receive returned {len(repeated)} message(s) already leased for an hour"
            + (f" ({repeated[0].id})" if repeated else ""),
        )
        held.update({d.id: d for d in got})
    want(
        "stats.counts",
        f"with {len(held)} messages leased",
        waiting=n - len(held) + (2 if delays else 0),
        delayed_min=1 if delays else 0,
        ready_min=n - len(held),
        in_flight=len(held),
        dead=0,
    )

    # ack: a list of deliveries at once
    acked = list(held.values())[: max(1, len(held) // 2)]
    t.ack(acked)
    for d in acked:
        del held[d.id]
    want(
        "ack",
        f"after acking {len(acked)} of them",
        in_flight=len(held),
        waiting=n - len(held) - len(acked) + (2 if delays else 0),
        ready_min=n - len(held) - len(acked),
    )

    # extend: a short lease extended to an hour is not handed out again after the short one
    got = t.receive([q], max_messages=1, wait=timedelta(seconds=1), lease=timedelta(seconds=2))
    if not got:
        observe(
            ctx,
            "receive.max_messages",
            False,
            f"receive(max_messages=1) with {n - len(held) - len(acked)} ready returned nothing",
        )
        return
    short = got[0]
    t.extend(short, lease=HOUR)
    ctx.try_wait(lambda: False, timeout=3.5)  # waiting out the short lease IS the check
    rest: list[Delivery] = []
    while True:
        got = t.receive([q], max_messages=10, wait=timedelta(0), lease=HOUR)
        if not got:
            break
        rest += got
    again = [d for d in rest if d.id == short.id]
    observe(
        ctx,
        "extend.lease",
        not again,
        f"a message received with a 2 s lease and extended to 1 h was "
        f"{'handed out again' if again else 'not handed out again'} 3.5 s later",
    )
    held[short.id] = short
    held.update({d.id: d for d in rest})
    if delays:
        soon = [d for d in rest if d.id == "c-soon"]
        observe(
            ctx,
            "send.delay",
            bool(soon),
            "the message sent with a 2 s delay was "
            f"{'delivered after it' if soon else 'not delivered 3.5 s after sending'}",
        )
        hour = any(d.id == "c-hour" for d in rest)
        observe(
            ctx,
            "send.delay",
            not hour,
            f"the message delayed an hour was {'delivered already' if hour else 'not delivered'}",
        )
    # receive from several queues: a message on the second one is found
    other = f"{q}-b"
    t.send([Message(queue=other, body=b"contract-b", id="c-b")])
    got = t.receive([q, other], max_messages=5, wait=timedelta(seconds=1), lease=HOUR)
    observe(
        ctx,
        "receive.queues",
        [(d.id, d.queue) for d in got] == [("c-b", other)],
        f"receive([{q}, {other}]) with one message due on the second returned "
        f"{[(d.id, d.queue) for d in got]}",
    )
    t.ack(got)

    receive_waits(ctx, t, original, q, held)

    # release with a delay: not before it, then delivered again with one more delivery
    first = held.get("c-late") or next(iter(held.values()))
    t.release(first, delay=timedelta(seconds=2))
    del held[first.id]
    released_at = time.monotonic()
    back: list[Delivery] = []

    def returned() -> bool:
        got = t.receive([q], max_messages=1, wait=timedelta(0), lease=HOUR)
        held.update({d.id: d for d in got if d.id != first.id})
        back.extend(d for d in got if d.id == first.id)
        return bool(back)

    ctx.try_wait(returned, timeout=2 + SLACK + 2)
    after = time.monotonic() - released_at
    observe(
        ctx,
        "release.delay",
        bool(back) and after >= 2 - 0.25,
        f"released with a 2 s delay: delivered again after {after:.2f} s"
        if back
        else f"released with a 2 s delay: not delivered again within {after:.2f} s",
    )
    if back:
        observe(
            ctx,
            "release.deliveries",
            back[0].deliveries == first.deliveries + 1,
            f"deliveries went from {first.deliveries} to {back[0].deliveries} on redelivery",
        )
        held[back[0].id] = back[0]

    _release_uncounted(ctx, t, q)

    # dead_letter with a reason, dead_letters' limit, oldest first
    doomed = sorted(held.values(), key=lambda d: d.id)[:3]
    reasons = {d.id: f"contract reason {i} ü" for i, d in enumerate(doomed)}
    for d in doomed:
        t.dead_letter(d, reason=reasons[d.id])
        del held[d.id]
    two = t.dead_letters(q, limit=2)
    every = t.dead_letters(q, limit=100)
    observe(
        ctx,
        "dead_letters.limit",
        len(two) == 2 and len(every) == 3,
        f"3 dead letters: dead_letters(limit=2) listed {len(two)}, limit=100 listed {len(every)}",
    )
    observe(
        ctx,
        "dead_letters.order",
        [d.id for d in every] == [d.id for d in doomed],
        f"dead-lettered in order {[d.id for d in doomed]}, listed {[d.id for d in every]}",
    )
    wrong = [
        d.id for d in every if d.reason != reasons.get(d.id) or d.body != _body_of(doomed, d.id)
    ]
    observe(
        ctx,
        "dead_letter.reason",
        not wrong,
        f"dead letters whose reason or body changed: {wrong or 'none'}",
    )
    want("stats.counts", "with 3 dead letters", dead=3, in_flight=len(held))

    # replay one by id, then purge the rest
    replayed = t.replay(q, ids=[doomed[0].id])
    observe(ctx, "replay.ids", replayed == 1, f"replay(ids=[one of 3]) returned {replayed}")
    want("stats.counts", "after replaying 1 of 3 dead letters", dead=2, ready=1)
    purged = t.purge(q)
    observe(ctx, "purge", purged == 2, f"purge of 2 dead letters returned {purged}")
    want("stats.counts", "after the purge", dead=0, ready=1, in_flight=len(held))

    # stats of all queues includes this one, with the same numbers
    everything = t.stats(None)
    mine = row(everything, q)
    observe(
        ctx,
        "stats.all_queues",
        mine is not None and mine.dead == 0 and mine.ready == 1,
        f"stats(None) listed {len(everything)} queue(s); this one: {_counts(mine)}",
    )

    # clone, connect and close: a clone, connected ahead of use (twice: idempotent), sees the
    # same queues; close twice is harmless
    twin = t.clone()
    try:
        twin.connect()
        twin.connect()
        failed = ""
    except JobkitError as exc:
        failed = f"{type(exc).__name__}: {exc}"
    observe(ctx, "connect", not failed, f"connect() twice on a clone: {failed or 'returned'}")
    got = twin.receive([q], max_messages=1, wait=timedelta(seconds=1), lease=HOUR)
    observe(
        ctx,
        "clone",
        [d.id for d in got] == [doomed[0].id],
        f"a clone received {[d.id for d in got]} (expected the replayed {doomed[0].id})",
    )
    held.update({d.id: d for d in got})
    t.ack(list(held.values()))
    if twin is not t:
        twin.close()
        observe_second_close(ctx, "close", twin)
    want(
        "stats.counts",
        "after acking everything received",
        ready=0,
        in_flight=0,
        dead=0,
        delayed=1 if delays else 0,
    )


def _release_uncounted(ctx: Context, t: Transport, q: str) -> None:
    """A message released uncounted (with a delay) comes back after the delay with the same
    attempt number: body `attempt` + `deliveries` unchanged."""
    t.send([Message(queue=q, body=json.dumps({"attempt": 2, "c": "u"}).encode(), id="c-u")])
    first: list[Delivery] = []

    def got_it() -> bool:
        first.extend(t.receive([q], max_messages=1, wait=timedelta(0), lease=HOUR))
        return bool(first)

    if not ctx.try_wait(got_it, timeout=5) or first[0].id != "c-u":
        observe(ctx, "release_uncounted", False, f"the message to release came back as {first}")
        return
    before = json.loads(first[0].body)["attempt"] + first[0].deliveries
    t.release_uncounted(first[0], delay=timedelta(seconds=1))
    released = time.monotonic()
    back: list[Delivery] = []

    def returned() -> bool:
        back.extend(t.receive([q], max_messages=1, wait=timedelta(0), lease=HOUR))
        return bool(back)

    ctx.try_wait(returned, timeout=1 + SLACK + 2)
    after = time.monotonic() - released
    if not back:
        observe(ctx, "release_uncounted", False, f"not delivered again within {after:.1f} s")
        return
    again = json.loads(back[0].body).get("attempt", 0) + back[0].deliveries
    observe(
        ctx,
        "release_uncounted",
        again == before and after >= 1 - 0.25,
        f"released uncounted with a 1 s delay: back after {after:.2f} s with attempt {again} "
        f"(body attempt + deliveries; it was {before})",
    )
    t.ack(back)


def _body_of(deliveries: Sequence[Delivery], message_id: str) -> bytes | None:
    return next((d.body for d in deliveries if d.id == message_id), None)
