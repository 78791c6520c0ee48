"""`MemoryTransport`: an in-process transport for tests and single-process tools.

It has the same semantics as the durable transports (leases, redelivery on lease expiry, delays,
priorities, dead letters with reasons, replay, stale-receipt protection) but keeps everything in
this process's memory: nothing survives the process, and other processes cannot see it
(``Capabilities.shared_across_processes`` is False).

Time comes from an injectable `jobkit.clock.Clock`, so tests can move it with a `ManualClock`
instead of sleeping. Blocking in ``receive(wait=...)`` uses real time.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from urllib.parse import parse_qs, urlsplit

from jobkit.capabilities import Capabilities, MigrationSupport
from jobkit.clock import Clock, SystemClock
from jobkit.errors import ConfigurationError
from jobkit.records import DeadLetter, Delivery, ExportedJob, Message, QueueStats
from jobkit.retention import parse_duration, pop_retention
from jobkit.store import MemoryJobStore
from jobkit.transport import Transport
from jobkit.transport_backend import TransportBackend, replay_body

_CAPABILITIES = Capabilities(
    name="memory",
    redelivery="lease expiry",
    redelivery_after=None,
    # a blocked receive looks for due messages at least every _MAX_BLOCK (0.05 s)
    scheduling_precision=timedelta(milliseconds=100),
    dead_letter=True,
    max_delay=None,
    priorities=10,
    time_limits=True,
    lease_extension=True,
    results=True,
    shared_across_processes=False,
    # exports with the default (receive-based) `Transport.export`: due jobs only, in-process
    migration=MigrationSupport(delayed_before_due=False, dead_letters=False, dedup="native"),
    survives_broker_restart=False,  # the broker is this process's memory
)

_MAX_BLOCK = 0.05
"""Longest real-time nap while blocking in `receive`, so a moved `ManualClock` is noticed."""


class _State(Enum):
    READY = "ready"
    DELAYED = "delayed"
    LEASED = "leased"


@dataclass(kw_only=True, eq=False)
class _Entry:
    seq: int
    queue: str
    id: str
    body: bytes
    priority: int
    state: _State
    due: datetime  # DELAYED: visible from; LEASED: lease end; READY: unused
    deliveries: int = 0
    token: str | None = None  # the current lease's token; None when not leased
    generation: int = 0  # bumped on every change, to drop stale heap items


@dataclass(kw_only=True, eq=False)
class _Dead:
    seq: int
    id: str
    body: bytes
    priority: int
    reason: str
    dead_at: datetime
    deliveries: int


class _Queue:
    """One queue's messages: a heap of visible ones and a heap of waiting ones (lazy deletion)."""

    def __init__(self) -> None:
        self.entries: dict[int, _Entry] = {}
        self.ready: list[tuple[int, int, int]] = []  # (-priority, seq, generation)
        self.waiting: list[tuple[datetime, int, int]] = []  # (due, seq, generation)
        self.dead: dict[int, _Dead] = {}  # insertion order is dead-letter order

    def put(self, entry: _Entry) -> None:
        entry.generation += 1
        if entry.state is _State.READY:
            heapq.heappush(self.ready, (-entry.priority, entry.seq, entry.generation))
        else:
            heapq.heappush(self.waiting, (entry.due, entry.seq, entry.generation))

    def promote(self, now: datetime) -> None:
        """Make delayed messages that are due, and expired leases, visible again."""
        while self.waiting and self.waiting[0][0] <= now:
            _, seq, generation = heapq.heappop(self.waiting)
            entry = self.entries.get(seq)
            if entry is None or entry.generation != generation:
                continue
            entry.state = _State.READY  # an expired lease keeps its token until redelivered
            self.put(entry)

    def pop_ready(self) -> _Entry | None:
        while self.ready:
            _, seq, generation = heapq.heappop(self.ready)
            entry = self.entries.get(seq)
            if entry is not None and entry.generation == generation:
                return entry
        return None

    def peek_ready(self) -> tuple[int, int] | None:
        """(-priority, seq) of the best visible message, dropping stale heap items."""
        while self.ready:
            neg_priority, seq, generation = self.ready[0]
            entry = self.entries.get(seq)
            if entry is not None and entry.generation == generation:
                return neg_priority, seq
            heapq.heappop(self.ready)
        return None

    def next_due(self) -> datetime | None:
        while self.waiting:
            due, seq, generation = self.waiting[0]
            entry = self.entries.get(seq)
            if entry is not None and entry.generation == generation:
                return due
            heapq.heappop(self.waiting)
        return None


class MemoryTransport(Transport):
    """In-memory leased delivery. Thread-safe: `clone` returns the same instance.

    Receipts are ``"<seq>:<token>"``; each delivery gets a fresh token, and ack / release /
    extend / dead_letter act only while their token is the message's current one. A lease that
    ran out but whose message was not yet delivered again is still current: acting on it is
    allowed, since nobody else holds the message.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._queues: dict[str, _Queue] = {}
        self._seq = itertools.count(1)

    @property
    def capabilities(self) -> Capabilities:
        return _CAPABILITIES

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def send(self, messages: Sequence[Message]) -> None:
        with self._lock:
            now = self._clock.now()
            for message in messages:
                delayed = message.delay > timedelta(0)
                entry = _Entry(
                    seq=next(self._seq),
                    queue=message.queue,
                    id=message.id,
                    body=message.body,
                    priority=message.priority,
                    state=_State.DELAYED if delayed else _State.READY,
                    due=now + message.delay,
                )
                queue = self._queue(message.queue)
                queue.entries[entry.seq] = entry
                queue.put(entry)
            self._changed.notify_all()

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Blocks (in real time) until something is due or `wait` has passed."""
        deadline = time.monotonic() + max(wait.total_seconds(), 0.0)
        with self._lock:
            while True:
                now = self._clock.now()
                got = self._take(queues, max_messages, now, lease)
                remaining = deadline - time.monotonic()
                if got or remaining <= 0 or max_messages <= 0:
                    return got
                nap = min(remaining, _MAX_BLOCK)
                next_due = self._next_due(queues)
                if next_due is not None:
                    nap = min(nap, max((next_due - now).total_seconds(), 0.001))
                self._changed.wait(nap)

    def _take(
        self, names: Sequence[str], limit: int, now: datetime, lease: timedelta
    ) -> list[Delivery]:
        queues = [
            (name, self._queues[name]) for name in dict.fromkeys(names) if name in self._queues
        ]
        for _, queue in queues:
            queue.promote(now)
        taken: list[Delivery] = []
        while len(taken) < limit:
            best: tuple[tuple[int, int], _Queue] | None = None
            for _, queue in queues:
                head = queue.peek_ready()
                if head is not None and (best is None or head < best[0]):
                    best = (head, queue)
            if best is None:
                break
            queue = best[1]
            entry = queue.pop_ready()
            assert entry is not None
            entry.state = _State.LEASED
            entry.due = now + lease
            entry.deliveries += 1
            entry.token = secrets.token_hex(8)
            queue.put(entry)
            taken.append(
                Delivery(
                    queue=entry.queue,
                    id=entry.id,
                    body=entry.body,
                    deliveries=entry.deliveries,
                    receipt=f"{entry.seq}:{entry.token}",
                    leased_until=entry.due,
                )
            )
        return taken

    def _next_due(self, names: Sequence[str]) -> datetime | None:
        dues = [
            due
            for name in names
            if name in self._queues and (due := self._queues[name].next_due()) is not None
        ]
        return min(dues, default=None)

    def _current(self, delivery: Delivery) -> tuple[_Queue, _Entry] | None:
        """The entry this delivery's receipt still holds, or None if the receipt is stale."""
        seq, token = _parse_receipt(delivery.receipt)
        queue = self._queues.get(delivery.queue)
        entry = queue.entries.get(seq) if queue is not None else None
        if queue is None or entry is None or entry.token is None or entry.token != token:
            return None
        return queue, entry

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                current = self._current(delivery)
                if current is not None:
                    queue, entry = current
                    del queue.entries[entry.seq]

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._release(delivery, delay, uncount=0)

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        """Native: takes this delivery off the entry's count. Idempotent."""
        self._release(delivery, delay, uncount=1)

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        with self._lock:
            bodies = [
                entry.body
                for name in dict.fromkeys(queues)
                if name in self._queues
                for entry in self._queues[name].entries.values()
            ]
        return bodies[: max(limit, 0)]

    def _release(self, delivery: Delivery, delay: timedelta, *, uncount: int) -> None:
        with self._lock:
            current = self._current(delivery)
            if current is None:
                return
            queue, entry = current
            entry.token = None
            entry.deliveries = max(entry.deliveries - uncount, 0)
            entry.state = _State.DELAYED if delay > timedelta(0) else _State.READY
            entry.due = self._clock.now() + delay
            queue.put(entry)
            self._changed.notify_all()

    def present(self, ids: Sequence[str]) -> set[str] | None:
        """Native: a scan of every queue (this transport is for tests and small tools)."""
        wanted = set(ids)
        with self._lock:
            found: set[str] = set()
            for queue in self._queues.values():
                found.update(e.id for e in queue.entries.values() if e.id in wanted)
                found.update(d.id for d in queue.dead.values() if d.id in wanted)
            return found

    def import_messages(self, jobs: Sequence[ExportedJob]) -> set[str]:
        """Live jobs only (dead letters: `UnsupportedFeature`); a job whose id is here already
        is skipped. Not atomic with other senders, which a per-process transport needs not be."""
        present = self.present([job.id for job in jobs]) or set()
        fresh = {job.id: job for job in jobs if job.id not in present}
        super().import_messages(list(fresh.values()))
        return {job.id for job in jobs} - set(fresh) | present

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        with self._lock:
            current = self._current(delivery)
            if current is None:
                return
            queue, entry = current
            del queue.entries[entry.seq]
            queue.dead[entry.seq] = _Dead(
                seq=entry.seq,
                id=entry.id,
                body=entry.body,
                priority=entry.priority,
                reason=reason,
                dead_at=self._clock.now(),
                deliveries=entry.deliveries,
            )

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        with self._lock:
            current = self._current(delivery)
            if current is None:
                return
            queue, entry = current
            entry.state = _State.LEASED
            entry.due = self._clock.now() + lease
            queue.put(entry)

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            dead = self._queues[queue].dead.values() if queue in self._queues else ()
            return [
                DeadLetter(
                    queue=queue,
                    id=d.id,
                    body=d.body,
                    reason=d.reason,
                    dead_at=d.dead_at,
                    deliveries=d.deliveries,
                )
                for d in itertools.islice(dead, max(limit, 0))
            ]

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Atomic: each message is on exactly one of the two queues at any moment."""
        with self._lock:
            if queue not in self._queues:
                return 0
            q = self._queues[queue]
            wanted = None if ids is None else set(ids)
            chosen = [d for d in q.dead.values() if wanted is None or d.id in wanted]
            for dead in chosen:
                del q.dead[dead.seq]
                entry = _Entry(
                    seq=dead.seq,
                    queue=queue,
                    id=dead.id,
                    body=replay_body(dead.body),
                    priority=dead.priority,
                    state=_State.READY,
                    due=self._clock.now(),
                )
                q.entries[entry.seq] = entry
                q.put(entry)
            if chosen:
                self._changed.notify_all()
            return len(chosen)

    def purge(self, queue: str) -> int:
        with self._lock:
            if queue not in self._queues:
                return 0
            count = len(self._queues[queue].dead)
            self._queues[queue].dead.clear()
            return count

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with self._lock:
            now = self._clock.now()
            names = sorted(self._queues) if queues is None else list(dict.fromkeys(queues))
            result = []
            for name in names:
                ready = in_flight = delayed = dead = 0
                if name in self._queues:
                    q = self._queues[name]
                    dead = len(q.dead)
                    for entry in q.entries.values():
                        if entry.state is _State.READY or entry.due <= now:
                            ready += 1
                        elif entry.state is _State.LEASED:
                            in_flight += 1
                        else:
                            delayed += 1
                result.append(
                    QueueStats(
                        queue=name, ready=ready, in_flight=in_flight, delayed=delayed, dead=dead
                    )
                )
            return result


def _parse_receipt(receipt: str) -> tuple[int, str]:
    seq, sep, token = receipt.partition(":")
    if not sep or not seq.isdigit():
        raise ValueError(f"{receipt!r} is not a receipt of a MemoryTransport")
    return int(seq), token


def backend_from_url(url: str) -> TransportBackend:
    """``memory://`` (options lease, records_ttl, keys_ttl): a MemoryTransport and MemoryJobStore.

    Only useful within one process (tests, scripts that enqueue and run jobs themselves).
    """
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.netloc or parts.path not in ("", "/"):
        raise ConfigurationError(
            f"memory backend URL {url!r} is not understood; write memory:// "
            "(optionally memory://?lease=30)"
        )
    options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    where = f"memory backend URL {url!r}: "
    retention = pop_retention(options, where=where)
    lease = parse_duration(options.pop("lease", "30"), what=f"{where}lease")
    if options:
        raise ConfigurationError(
            f"backend URL {url!r} has unknown option(s) {', '.join(sorted(options))}; "
            "the options are lease, records_ttl and keys_ttl (durations), "
            "e.g. memory://?lease=30s&keys_ttl=24h"
        )
    return TransportBackend(
        MemoryTransport(), MemoryJobStore(retention=retention), default_lease=lease
    )
