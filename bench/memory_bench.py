"""Benchmark the in-process memory backend beside a plain stdlib queue with one job process.

jobkit: ``memory://``, ``noop.enqueue`` one call per job, ``noop.enqueue_many`` in batches of
500, and an in-process `Worker` (``-c 1``, prefetch 16, burst) draining the queue; its job
process is a separate process, as always. The drain rate is steady-state: (N-1) / (first to
last job end, from the job records), so worker start-up is excluded. Latency with a running
worker on a thread.

Native: JSON bodies in a ``queue.SimpleQueue`` in the same process, and a dispatcher thread that
decodes each one, runs it in one ``ProcessPoolExecutor`` job process and waits for it (one job
at a time, like jobkit's ``-c 1``). ``queue`` has no batch call, so ``enqueue_many`` is "-".

    .venv/bin/python bench/memory_bench.py [--quick]

``measure(quick=...)`` is what ``bench/run.py`` calls. Speed figures live here, never in tests.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _local import (  # noqa: E402
    BATCH,
    STAMPS_ENV,
    alternating,
    enqueue_rates,
    latency_ms,
    paced,
    warm_latency_ms,
)
from _rows import Measurement  # noqa: E402
from noop_app import app, stamp  # noqa: E402

from jobkit.spi import TransportBackend, Worker, WorkerOptions, open_backend  # noqa: E402

PREFETCH = 16
BACKEND = "memory"


def measure(*, quick: bool) -> list[Measurement]:
    """jobkit and the stdlib loop, alternating, median of 3 rounds (1 if `quick`)."""
    jobs, latency_jobs, rounds = (300, 20, 1) if quick else (10_000, 200, 3)
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-memory-") as tmp:
        work = Path(tmp)
        previous = os.environ.get(STAMPS_ENV)
        try:
            return alternating(
                rounds,
                lambda r: jobkit_round(work / f"jobkit-{r}", jobs, latency_jobs),
                lambda r: native_round(work / f"native-{r}", jobs, latency_jobs),
            )
        finally:
            if previous is None:
                os.environ.pop(STAMPS_ENV, None)
            else:
                os.environ[STAMPS_ENV] = previous


# -- jobkit ------------------------------------------------------------------------------------


def fresh_backend() -> TransportBackend:
    backend = open_backend("memory://")
    assert isinstance(backend, TransportBackend)
    app.use(backend)
    return backend


def worker(backend: TransportBackend, *, burst: bool) -> Worker:
    options = WorkerOptions(
        app_path="noop_app:app",
        queues=("bench",),
        concurrency=1,
        prefetch=PREFETCH,
        lease=timedelta(seconds=60),
        poll=timedelta(seconds=0.2),
        burst=burst,
    )
    return Worker(app, backend, options)


def jobkit_round(work: Path, jobs: int, latency_jobs: int) -> Measurement:
    work.mkdir()
    backends: list[TransportBackend] = []
    enqueue, enqueue_many, handles = enqueue_rates(jobs, lambda: backends.append(fresh_backend()))
    backend = backends[-1]
    worker(backend, burst=True).run()
    ends = []
    for handle in handles:
        record = backend.job_record(handle.id)
        if record is None or record.updated_at is None or record.state.value != "succeeded":
            raise RuntimeError(f"job {handle.id} did not succeed: {record}")
        ends.append(record.updated_at)
    span = (max(ends) - min(ends)).total_seconds()
    drain = (len(ends) - 1) / span if span > 0 else float("inf")

    p50, p99 = jobkit_latency(work, latency_jobs)
    app.close()
    return Measurement(
        backend=BACKEND,
        system="jobkit",
        jobs=jobs,
        enqueue_per_s=enqueue,
        enqueue_many_per_s=enqueue_many,
        drain_per_s=drain,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        notes=f"in-process worker, -c 1, prefetch {PREFETCH}; enqueue_many in batches of {BATCH}",
    )


def jobkit_latency(work: Path, count: int) -> tuple[float, float]:
    stamps = work / "stamps.txt"
    os.environ[STAMPS_ENV] = str(stamps)  # the job process inherits it
    running = worker(fresh_backend(), burst=False)
    thread = threading.Thread(target=running.run, name="bench-worker")
    thread.start()
    try:
        stamp.enqueue(time.time())
        return warm_latency_ms(stamps, lambda sent: stamp.enqueue(sent), count)
    finally:
        running.stop()
        thread.join(timeout=60)


# -- the stdlib loop ---------------------------------------------------------------------------


def run_noop(sent: float) -> float:
    """The job, in the job process; returns when it started."""
    return time.time()


def dispatch(jobs: queue.SimpleQueue[bytes | None], pool: ProcessPoolExecutor) -> list[float]:
    """Decode and run each job of `jobs` in the pool, one at a time, until None. Returns each
    job's start minus the time its body carries (its latency, for the stamped jobs)."""
    latencies = []
    while (item := jobs.get()) is not None:
        sent = json.loads(item)["args"][0]
        latencies.append(pool.submit(run_noop, sent).result() - sent)
    return latencies


def body(arg: float) -> bytes:
    return json.dumps({"v": 1, "job": "noop", "args": [arg]}).encode()


def native_round(work: Path, jobs: int, latency_jobs: int) -> Measurement:
    work.mkdir()
    with ProcessPoolExecutor(max_workers=1) as pool:
        pool.submit(run_noop, 0.0).result()  # the job process is up
        waiting: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        t0 = time.perf_counter()
        for i in range(jobs):
            waiting.put(body(i))
        enqueue = jobs / (time.perf_counter() - t0)
        waiting.put(None)
        t0 = time.perf_counter()
        dispatch(waiting, pool)
        drain = jobs / (time.perf_counter() - t0)

        live: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        result: list[float] = []
        thread = threading.Thread(target=lambda: result.extend(dispatch(live, pool)))
        thread.start()
        paced(latency_jobs + 1, lambda sent: live.put(body(sent)))
        live.put(None)
        thread.join(timeout=60)
    stamps = work / "stamps.txt"
    stamps.write_text("".join(f"{x}\n" for x in result))
    p50, p99 = latency_ms(stamps, 1, latency_jobs)
    return Measurement(
        backend=BACKEND,
        system="queue+process",
        jobs=jobs,
        enqueue_per_s=enqueue,
        enqueue_many_per_s=None,
        drain_per_s=drain,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        notes="JSON bodies in a queue.SimpleQueue, 1 ProcessPoolExecutor job process, 1 at a time",
    )


if __name__ == "__main__":
    from run import standalone

    standalone(measure, __doc__)
