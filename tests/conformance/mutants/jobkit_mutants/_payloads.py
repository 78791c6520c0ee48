"""Broken backends the suite passed before issue 10's payload, dead-letter, poison and
shutdown checks: each wraps a real backend (the URL after ``+``) and breaks one promise."""

from __future__ import annotations

import inspect
import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from jobkit import ConfigurationError, JobRecord, SerializationError
from jobkit.spi import (
    DeadLetter,
    Delivery,
    EventKind,
    JobEvent,
    JobStore,
    Message,
    Transport,
    TransportBackend,
    decode,
    open_backend,
    replay_body,
)
from jobkit_mutants import ForgetfulStore, Wrapped, _wrap


def _rewrite(body: bytes, fix: Any) -> bytes:
    """`body` with its envelope's args passed through `fix` (undecodable bodies unchanged)."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if not isinstance(data, dict) or "args" not in data:
        return body
    data["args"] = fix(data["args"])
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _js_numbers(value: Any) -> Any:
    """What a JavaScript JSON codec does to integers: doubles beyond 2^53."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and abs(value) > 2**53:
        return float(value)
    if isinstance(value, list):
        return [_js_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _js_numbers(v) for k, v in value.items()}
    return value


def _utf8mb3(value: Any) -> Any:
    """What MySQL's 3-byte ``utf8`` does to text: astral characters become '?'."""
    if isinstance(value, str):
        return "".join("?" if ord(c) > 0xFFFF else c for c in value)
    if isinstance(value, list):
        return [_utf8mb3(v) for v in value]
    if isinstance(value, dict):
        return {_utf8mb3(k): _utf8mb3(v) for k, v in value.items()}
    return value


class JsNumbers(Wrapped):
    """Re-encodes message bodies the way a JavaScript relay would: integers beyond 2^53 arrive
    as doubles."""

    name = "mutant-js-numbers"

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        return [replace(d, body=_rewrite(d.body, _js_numbers)) for d in got]


class Utf8mb3(Wrapped):
    """Stores bodies in a 3-byte UTF-8 column: astral characters (emoji) arrive as '?'."""

    name = "mutant-utf8mb3"

    def send(self, messages: Sequence[Message]) -> None:
        self.inner.send([replace(m, body=_rewrite(m.body, _utf8mb3)) for m in messages])


class RoundingStore(ForgetfulStore):
    """Keeps results with 15 significant digits, as a store with a float column would (and,
    unlike its base, forgets nothing)."""

    def get(self, job_id: str) -> JobRecord | None:
        record = self.inner.get(job_id)
        if record is None or record.result is None:
            return record
        rounded = json.loads(
            json.dumps(record.result), parse_float=lambda s: float(f"{float(s):.15g}")
        )
        return replace(record, result=rounded)

    def done(self, keys: Sequence[str]) -> set[str]:
        return self.inner.done(keys)


class DlqOnePage(Wrapped):
    """Lists one page of 10 dead letters, however many there are (a single SQS receive)."""

    name = "mutant-dlq-one-page"

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self.inner.dead_letters(queue, limit=min(limit, 10))


class PurgeAll(Wrapped):
    """Purge empties the queue as well as its dead letters (a native "purge queue")."""

    name = "mutant-purge-all"

    def purge(self, queue: str) -> int:
        count = self.inner.purge(queue)
        while got := self.inner.receive(
            [queue], max_messages=100, wait=timedelta(0), lease=timedelta(seconds=30)
        ):
            self.inner.ack(got)
        return count


class ReplayRaces(Wrapped):
    """Replays by reading the dead letters, sending copies, then deleting the originals, with
    no lock: two replays at once both send every dead letter. Works on ``sqlite://`` only."""

    name = "mutant-replay-races"

    def __init__(self, inner: Transport, path: str = "") -> None:
        super().__init__(inner)
        self.path = path

    def clone(self) -> Transport:
        return ReplayRaces(self.inner.clone(), self.path)

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        wanted = [
            d for d in self.inner.dead_letters(queue, limit=10_000) if ids is None or d.id in ids
        ]
        time.sleep(0.2)  # one round trip per message on a real broker
        self.inner.send([Message(queue=queue, body=replay_body(d.body), id=d.id) for d in wanted])
        with sqlite3.connect(self.path, timeout=30) as db:
            db.executemany(
                "DELETE FROM jobkit_messages WHERE queue = ? AND state = 'dead' AND id = ?",
                [(queue, d.id) for d in wanted],
            )
        return len(wanted)


class DropsPoison(Wrapped):
    """Acknowledges (drops) what the worker dead-letters when the body is JSON but not an
    envelope this jobkit runs; only bodies that are not JSON at all reach the DLQ."""

    name = "mutant-drops-poison"

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        try:
            json.loads(delivery.body)
            decode(delivery.body)
        except SerializationError:
            self.inner.ack([delivery])  # JSON, but not a runnable envelope
            return
        except ValueError:
            pass  # not JSON: dead-lettered as it should be
        self.inner.dead_letter(delivery, reason=reason)


class ReleaseCounts(Wrapped):
    """Counts an uncounted release (a job leased but never started) as a delivery, as a broker
    that cannot lower its receive count would if the adapter did not correct it."""

    name = "mutant-release-counts"

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self.inner.release(delivery, delay=delay)


class AwaitsNothing(Wrapped):
    """The worker side of a backend that calls an ``async def`` job like a function: it gets a
    coroutine back, never awaits it, and records the job SUCCEEDED."""

    name = "mutant-awaits-nothing"

    def __init__(self, inner: Transport, store: JobStore | None = None) -> None:
        super().__init__(inner)
        self.store = store
        self.async_jobs: frozenset[str] = frozenset()

    def clone(self) -> Transport:
        twin = AwaitsNothing(self.inner.clone(), self.store)
        twin.async_jobs = self.async_jobs
        return twin

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        got = self.inner.receive(queues, max_messages=max_messages, wait=wait, lease=lease)
        keep, skipped = [], []
        for d in got:
            try:
                env = decode(d.body)
            except SerializationError:
                keep.append(d)
                continue
            if env.job in self.async_jobs and self.store is not None:
                self.store.record(
                    [JobEvent(job_id=env.id, job=env.job, kind=EventKind.SUCCEEDED,
                              attempt=env.attempt + d.deliveries, at=datetime.now(UTC))]
                )  # fmt: skip
                skipped.append(d)
            else:
                keep.append(d)
        if skipped:
            self.inner.ack(skipped)
        return keep


class AwaitsNothingBackend(TransportBackend):
    def run_worker(self, app: Any, options: Any) -> None:
        transport = self.transport
        if isinstance(transport, AwaitsNothing):
            transport.async_jobs = frozenset(
                name
                for name, job in app.jobs.items()
                if inspect.iscoroutinefunction(getattr(job, "fn", None))
            )
        super().run_worker(app, options)


def _sqlite_file(url: str) -> str:
    rest = url.split("://", 1)[1].split("?", 1)[0]
    if not rest.startswith("/") or rest == "/":
        raise ConfigurationError(f"{url!r}: mutant-replay-races needs a sqlite:/// file")
    return rest[1:]


def js_numbers(url: str) -> TransportBackend:
    return _wrap(url, JsNumbers)


def utf8mb3(url: str) -> TransportBackend:
    return _wrap(url, Utf8mb3)


def dlq_one_page(url: str) -> TransportBackend:
    return _wrap(url, DlqOnePage)


def purge_all(url: str) -> TransportBackend:
    return _wrap(url, PurgeAll)


def drops_poison(url: str) -> TransportBackend:
    return _wrap(url, DropsPoison)


def _inner(url: str) -> tuple[TransportBackend, str]:
    """The wrapped backend of ``mutant-...+URL``, and its URL."""
    _scheme, _, inner_url = url.partition("+")
    inner = open_backend(inner_url)
    if not isinstance(inner, TransportBackend):
        raise ConfigurationError(f"{inner_url!r} is not a transport backend")
    return inner, inner_url


def _rebuilt(inner: TransportBackend, transport: Transport, store: JobStore) -> TransportBackend:
    return TransportBackend(transport, store, clock=inner.clock, default_lease=inner.default_lease)


def replay_races(url: str) -> TransportBackend:
    inner, inner_url = _inner(url)
    return _rebuilt(inner, ReplayRaces(inner.transport, _sqlite_file(inner_url)), inner.store)


def release_counts(url: str) -> TransportBackend:
    return _wrap(url, ReleaseCounts)


def awaits_nothing(url: str) -> TransportBackend:
    inner, _ = _inner(url)
    transport = AwaitsNothing(inner.transport, inner.store)
    return AwaitsNothingBackend(
        transport, inner.store, clock=inner.clock, default_lease=inner.default_lease
    )


def rounds_results(url: str) -> TransportBackend:
    inner, _ = _inner(url)
    transport = Wrapped(inner.transport)
    transport.name = "mutant-rounds-results"
    return _rebuilt(inner, transport, RoundingStore(inner.store))
