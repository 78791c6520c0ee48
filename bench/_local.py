"""Helpers shared by the benchmarks of the backends that need no broker server (sqlite, memory).

Latency is measured the same way for every system: a worker is running and warm, a producer
sends `stamp(time.time())` jobs at `LATENCY_RATE` per second, and each job, when it starts,
appends ``now - sent`` (seconds) to the file named by ``JOBKIT_BENCH_STAMPS`` (see
``noop_app.stamp``). Percentiles are nearest-rank.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from _rows import Measurement
from noop_app import noop

from jobkit import JobHandle

BATCH = 500
"""Jobs per ``enqueue_many`` call."""
LATENCY_RATE = 50.0
"""Jobs per second sent while measuring latency: a lightly loaded queue."""
STAMPS_ENV = "JOBKIT_BENCH_STAMPS"


def enqueue_rates(jobs: int, use: Callable[[], None]) -> tuple[float, float, list[JobHandle[None]]]:
    """(enqueue/s, enqueue_many/s, the handles of the batch-sent jobs) of `jobs` no-op jobs:
    ``noop.enqueue`` one call per job on a backend from `use()` (which points ``noop_app.app``
    at a fresh one), then ``noop.enqueue_many`` in batches of `BATCH` on another from `use()`,
    which is left open (its queue holds the `jobs` plus one warm-up job) for the drain. Each
    backend gets one warm-up job before the timing, which opens it."""
    use()
    noop.enqueue(-1)
    t0 = time.perf_counter()
    for i in range(jobs):
        noop.enqueue(i)
    one = jobs / (time.perf_counter() - t0)
    use()
    handles = noop.enqueue_many([(-1,)])
    t0 = time.perf_counter()
    for start in range(0, jobs, BATCH):
        handles += noop.enqueue_many([(i,) for i in range(start, min(start + BATCH, jobs))])
    return one, jobs / (time.perf_counter() - t0), handles


INTERLEAVE = 50
"""Calls per system in a turn of `interleaved_enqueue`."""


def interleaved_enqueue(
    sends: Mapping[str, Callable[[int, int], object]], n: int, *, turn: int = INTERLEAVE
) -> dict[str, float]:
    """Seconds each system took to enqueue jobs ``0 .. n-1``, the systems taking turns of `turn`
    jobs (the first of each turn rotating): ``send(start, stop)`` enqueues jobs ``start ..
    stop-1`` (one call per job, or one batch).

    One call takes 0.3-4 ms on a local broker, and a shared 2-core machine's speed drifts by
    ±25 % over seconds: blocks of a thousand calls per system, one system after the other,
    gave ratios from 0.79 to 1.09 between runs of the same code. Turns this short put both
    systems under the same drift; each system's figure is then the total of its turns."""
    kinds = list(sends)
    spent = dict.fromkeys(kinds, 0.0)
    for index, start in enumerate(range(0, n, turn)):
        stop = min(start + turn, n)
        for kind in kinds[index % len(kinds) :] + kinds[: index % len(kinds)]:
            t0 = time.perf_counter()
            sends[kind](start, stop)
            spent[kind] += time.perf_counter() - t0
    return spent


def one_by_one(send: Callable[..., object], *args: object) -> Callable[[int, int], None]:
    """For `interleaved_enqueue`: ``send(i, *args)`` for each job ``i`` of a turn."""

    def turn(start: int, stop: int) -> None:
        for i in range(start, stop):
            send(i, *args)

    return turn


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def paced(count: int, send: Callable[[float], object], rate: float = LATENCY_RATE) -> None:
    """Call `send(time.time())` `count` times at `rate` per second. Blocks about count/rate s."""
    start = time.monotonic()
    for i in range(count):
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)  # pacing the producer is the point here
        send(time.time())


def read_stamps(path: Path, count: int, *, timeout: float = 60.0) -> list[float]:
    """The first `count` latencies (seconds) written to `path`, waiting up to `timeout` s for
    them. Raises RuntimeError if they do not all arrive."""
    deadline = time.monotonic() + timeout
    while True:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            return [float(x) for x in lines[:count]]
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(lines)} of {count} latency jobs ran in {timeout} s")
        time.sleep(0.02)


def latency_ms(path: Path, warm: int, count: int) -> tuple[float, float]:
    """(p50, p99) in milliseconds of the `count` stamps after the first `warm` (the warm-up)."""
    got = read_stamps(path, warm + count)[warm:]
    return percentile(got, 50) * 1000, percentile(got, 99) * 1000


def warm_latency_ms(
    path: Path, send: Callable[[float], object], count: int, *, warm: int = 1
) -> tuple[float, float]:
    """(p50, p99) ms of `count` stamp jobs sent by `send` at `LATENCY_RATE`, once the `warm`
    warm-up jobs already sent have written their stamps to `path` (the worker is up and warm;
    waited for up to 120 s). The warm-up stamps are left out."""
    read_stamps(path, warm, timeout=120)
    paced(count, send)
    return latency_ms(path, warm, count)


def median_of(runs: Sequence[Measurement]) -> Measurement:
    """One measurement whose figures are the medians of `runs` (same backend and system)."""
    figures: dict[str, float | None] = {}
    for f in fields(Measurement):
        values = [getattr(r, f.name) for r in runs]
        if isinstance(values[0], float) or values[0] is None:
            known = [v for v in values if v is not None]
            figures[f.name] = statistics.median(known) if known else None
    note = f"median of {len(runs)} rounds" if len(runs) > 1 else ""
    notes = "; ".join(x for x in (runs[0].notes, note) if x)
    return replace(runs[0], **figures, notes=notes)  # type: ignore[arg-type]


def alternating(
    rounds: int, first: Callable[[int], Measurement], second: Callable[[int], Measurement]
) -> list[Measurement]:
    """Run both systems `rounds` times, alternating which goes first (so that a drift of the
    machine's load falls on both alike); the median of each system's rounds."""
    a: list[Measurement] = []
    b: list[Measurement] = []
    for r in range(rounds):
        if r % 2 == 0:
            a.append(first(r))
            b.append(second(r))
        else:
            b.append(second(r))
            a.append(first(r))
    return [median_of(a), median_of(b)]
