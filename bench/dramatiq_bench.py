"""Benchmark jobkit-on-Dramatiq against plain Dramatiq: same broker, same no-op job, same
number of worker processes and threads.

Per broker (Redis, then RabbitMQ), in rounds: enqueue the round's jobs one call at a time
(``actor.send(i, n)`` vs ``job.enqueue(i, n)``) with no worker running, the two systems taking
turns of 50 calls (`_local.interleaved_enqueue`: both under the same drift of the machine's
speed), then start each system's worker in turn (which goes first alternating by round) and
time its drain from marks the job writes (every job INCRs a counter in Redis db 1; jobs
``i < 4`` and the one that brings the counter to ``n`` RPUSH ``time.time()`` to a list there:
the same per-job cost on both sides). Workers:
plain ``dramatiq -p 2 -t 1`` (its default middleware, a broker configured
like jobkit's: same namespace, confirms on RabbitMQ) against ``jobkit worker -c 2 --prefetch 2``
(two job processes, each holding what a one-thread Dramatiq process prefetches; jobkit's own
worker, job records in memory). Each figure is the median of the
rounds' rates.

Latency, per broker and system, once after the rounds: the worker started exactly as for the
drain, warm once the few ``stamp`` jobs sent to it at once have run (left out), then ``stamp(sent)``
sent one call at a time at ``_local.LATENCY_RATE`` (50/s) with ``sent = time.time()``; the job,
when it starts, appends ``time.time() - sent`` to the file named by ``JOBKIT_BENCH_STAMPS``
(the same work on both sides, as ``noop_app.stamp``). p50 / p99 (nearest rank) of 200 jobs, 20
with ``--quick``.

    .venv/bin/python bench/dramatiq_bench.py [--jobs 5000] [--rounds 4] [--broker redis|amqp]

It starts its own redis-server and rabbitmq-server on free ports and stops them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import noop_app  # noqa: E402
from _local import (  # noqa: E402
    LATENCY_RATE,
    STAMPS_ENV,
    interleaved_enqueue,
    one_by_one,
    warm_latency_ms,
)
from _rows import Measurement  # noqa: E402

import jobkit  # noqa: E402

QUEUE = "bench"
PLAIN_QUEUE = "bench-plain"
PROCESSES = 2
PREFETCH = 2
"""Messages each worker process holds: plain Dramatiq's default for one thread (its consumers
prefetch ``threads * 2``: one running, one waiting), jobkit's ``--prefetch`` (one running, one
queued in the job process's pipe)."""
MARKS_ENV = "DRAMATIQ_BENCH_MARKS"
PLAIN_ENV = "DRAMATIQ_BENCH_PLAIN_URL"  # set: this module declares the plain Dramatiq actor


_marks: Any = None  # this process's client of the marks db (both systems' jobs use one)


def _mark(i: int, n: int) -> None:
    """Every job counts itself done (one INCR, the same on both sides); the first four and the
    one that completes the count push a time. The last job to finish ends the drain, in
    whatever order the jobs ran (marking the last ids instead ended it early when a worker ran
    them before the rest)."""
    global _marks
    if n <= 0:
        return
    if _marks is None:
        import redis

        _marks = redis.Redis.from_url(os.environ[MARKS_ENV])
    last = _marks.incr("done") == n
    for _ in range(int(i < 4) + int(last)):
        _marks.rpush("marks", time.time())


app = jobkit.App("dramatiq-bench")


@app.job(name="noop", queue=QUEUE)
def noop(i: int, n: int) -> None:
    _mark(i, n)


# the latency probe, the same function on both sides: appends its start time minus `sent`
stamp = app.job(name="stamp", queue=QUEUE)(noop_app.stamp.fn)


def plain_actors(url: str) -> tuple[Any, Any]:
    """Plain Dramatiq's broker for the jobkit URL `url` (as `native_broker` builds it) and
    the same no-op and stamp jobs as actors on its own queue: (noop actor, stamp actor)."""
    import dramatiq
    from jobkit_dramatiq import native_broker, parse_url

    broker = native_broker(parse_url(url))
    dramatiq.set_broker(broker)

    def plain_noop(i: int, n: int) -> None:
        _mark(i, n)

    def declare(name: str, fn: Any) -> Any:
        return dramatiq.actor(actor_name=name, queue_name=PLAIN_QUEUE, broker=broker)(fn)

    return declare("plain_noop", plain_noop), declare("plain_stamp", noop_app.stamp.fn)


if os.environ.get(PLAIN_ENV):  # imported by the plain `dramatiq` worker
    plain_noop, plain_stamp = plain_actors(os.environ[PLAIN_ENV])


def _start_worker(
    kind: str, url: str, marks_url: str, stamps: Path | None = None
) -> subprocess.Popen[bytes]:
    """The worker of `kind` ("plain" or "jobkit") on `url`, in its own process group; its jobs
    write marks to `marks_url` and, if `stamps` is given, latency stamps to that file."""
    env = dict(os.environ, **{MARKS_ENV: marks_url}, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}")
    if stamps is not None:
        env[STAMPS_ENV] = str(stamps)
    if kind == "plain":
        env[PLAIN_ENV] = url
        argv = ["-m", "dramatiq", "dramatiq_bench", "-p", str(PROCESSES), "-t", "1",
                "-Q", PLAIN_QUEUE]  # fmt: skip
    else:
        argv = ["-m", "jobkit.cli.main", "--app", "dramatiq_bench:app", "--backend", url,
                "worker", "-q", QUEUE, "-c", str(PROCESSES),
                "--prefetch", str(PREFETCH)]  # fmt: skip
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=HERE,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _enqueue(url: str, n: int) -> dict[str, float]:
    """Seconds each system took to enqueue `n` jobs one call at a time (``actor.send(i, n)``
    vs ``noop.enqueue(i, n)``), in turns (`_local.interleaved_enqueue`), each on a client
    opened for this and warmed by one job outside the timing. The jobs stay queued."""
    actor, _ = plain_actors(url)
    actor.send(-1, 0)  # connect and declare outside the timing
    app.use(url)
    noop.enqueue(-1, 0)
    try:
        return interleaved_enqueue(
            {"plain": one_by_one(actor.send, n), "jobkit": one_by_one(noop.enqueue, n)}, n
        )
    finally:
        actor.broker.close()
        app.close()


def _drain(kind: str, url: str, marks_url: str, n: int) -> float:
    """Seconds `kind`'s worker took to drain the `n` jobs `_enqueue` left on its queue."""
    import redis

    marks = redis.Redis.from_url(marks_url)
    marks.delete("marks", "done")
    worker = _start_worker(kind, url, marks_url)
    try:
        deadline = time.monotonic() + 600
        while marks.llen("marks") < 5:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{kind}: the drain did not finish")
            time.sleep(0.05)
        stamps = sorted(float(x) for x in marks.lrange("marks", 0, -1))
    finally:
        _stop(worker)
        marks.close()
    return (stamps[-1] - stamps[0]) * n / (n - 1)


def _latency_ms(kind: str, url: str, marks_url: str, count: int) -> tuple[float, float]:
    """(p50, p99) enqueue-to-start latency in ms of `count` stamp jobs sent one at a time at
    `LATENCY_RATE` to a warm worker of `kind` (started by `_start_worker`, as for the drain;
    warm once the stamp jobs sent at once before them have run, which are left out)."""
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-dramatiq-") as tmp:
        stamps = Path(tmp) / "stamps"
        if kind == "plain":
            _, actor = plain_actors(url)
            close = actor.broker.close

            def send(sent: float) -> None:
                actor.send(sent)

        else:
            app.use(url)
            close = app.close

            def send(sent: float) -> None:
                stamp.enqueue(sent)

        try:
            worker = _start_worker(kind, url, marks_url, stamps)
            try:
                warm = 2 * PROCESSES  # sent at once, so that each process likely runs one
                for _ in range(warm):
                    send(time.time())
                return warm_latency_ms(stamps, send, count, warm=warm)
            finally:
                _stop(worker)
        finally:
            close()


def _broker(
    broker: str, jobs: int, rounds: int, latency_jobs: int, redis_url: str, amqp_url: str
) -> dict[str, Any]:
    """Per system: (enqueue, drain) jobs/s, each the median over the rounds (the machine is
    shared: a median keeps one disturbed round from deciding the figure), then
    (p50, p99) latency ms of `latency_jobs` stamp jobs, one run per system."""
    import redis

    url = f"dramatiq+{redis_url}/0" if broker == "redis" else f"dramatiq+{amqp_url}"
    rates: dict[str, list[tuple[float, float]]] = {"plain": [], "jobkit": []}
    block = max(jobs // rounds, 20)

    def emptied() -> None:
        """On Redis, empty the broker's db for what comes next."""
        if broker == "redis":
            client = redis.Redis.from_url(f"{redis_url}/0")
            client.flushdb()
            client.close()

    for r in range(rounds):
        enqueue_s = _enqueue(url, block)
        for kind in ("plain", "jobkit") if r % 2 == 0 else ("jobkit", "plain"):
            drain_s = _drain(kind, url, f"{redis_url}/1", block)
            rates[kind].append((block / enqueue_s[kind], block / drain_s))
            print(
                f"{broker} round {r + 1} {kind:>6}: enqueue {block / enqueue_s[kind]:6.0f} "
                f"jobs/s   drain {block / drain_s:6.0f} jobs/s",
                flush=True,
            )
        emptied()
    latency: dict[str, tuple[float, float]] = {}
    for kind in ("plain", "jobkit") if broker == "redis" else ("jobkit", "plain"):
        latency[kind] = _latency_ms(kind, url, f"{redis_url}/1", latency_jobs)
        emptied()
        print(
            f"{broker} latency {kind:>6}: p50 {latency[kind][0]:6.1f} ms   "
            f"p99 {latency[kind][1]:6.1f} ms ({latency_jobs} jobs at {LATENCY_RATE:.0f}/s)",
            flush=True,
        )
    return {
        "jobs": block * rounds,
        **{
            kind: (
                statistics.median(e for e, _ in found),
                statistics.median(d for _, d in found),
                *latency[kind],
            )
            for kind, found in rates.items()
        },
    }


def measure(
    *,
    quick: bool,
    brokers: tuple[str, ...] = ("redis", "amqp"),
    jobs: int | None = None,
    rounds: int | None = None,
) -> list[Measurement]:
    """jobkit and plain Dramatiq on each broker; starts and stops its own servers. `jobs` and
    `rounds` default to 200 in 2 rounds with `quick`, else 5,000 in 4; latency over 20 stamp
    jobs with `quick`, else 200."""
    from tests.servers.rabbitmq import start_rabbitmq
    from tests.servers.redis import start_redis

    jobs = jobs or (200 if quick else 5000)
    rounds = rounds or (2 if quick else 4)
    latency_jobs = 20 if quick else 200
    redis_server = start_redis(persistent=False)
    rabbit = start_rabbitmq() if "amqp" in brokers else None
    out: list[Measurement] = []
    try:
        for broker in brokers:
            found = _broker(
                broker, jobs, rounds, latency_jobs, redis_server.url, rabbit.url if rabbit else ""
            )
            for system in ("jobkit", "plain"):
                enqueue, drain, p50, p99 = found[system]
                out.append(
                    Measurement(
                        backend=f"dramatiq+{broker}",
                        system="jobkit" if system == "jobkit" else "dramatiq",
                        jobs=found["jobs"],
                        enqueue_per_s=enqueue,
                        enqueue_many_per_s=None,
                        drain_per_s=drain,
                        latency_p50_ms=p50,
                        latency_p99_ms=p99,
                        notes=(
                            f"{PROCESSES} processes x 1 thread, prefetch {PREFETCH} each; "
                            "jobkit: store=memory"
                        ),
                    )
                )
    finally:
        if rabbit is not None:
            rabbit.stop()
        redis_server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--broker", choices=["redis", "amqp"], action="append")
    parser.add_argument("--jobs", type=int, help="jobs per system, all rounds (default 5000)")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 4)")
    args = parser.parse_args()
    rows = measure(
        quick=args.quick,
        brokers=tuple(args.broker or ("redis", "amqp")),
        jobs=args.jobs,
        rounds=args.rounds,
    )
    by = {(r.backend, r.system): r for r in rows}
    for backend in sorted({r.backend for r in rows}):
        j, p = by[(backend, "jobkit")], by[(backend, "dramatiq")]
        assert j.enqueue_per_s and p.enqueue_per_s and j.drain_per_s and p.drain_per_s
        assert j.latency_p50_ms is not None and j.latency_p99_ms is not None
        assert p.latency_p50_ms is not None and p.latency_p99_ms is not None
        print(
            f"{backend}, {j.jobs} jobs, {PROCESSES} processes: jobkit {j.enqueue_per_s:.0f} / "
            f"{j.drain_per_s:.0f}, plain Dramatiq {p.enqueue_per_s:.0f} / {p.drain_per_s:.0f} "
            f"jobs/s (enqueue / drain); ratio enqueue {j.enqueue_per_s / p.enqueue_per_s:.2f}, "
            f"drain {j.drain_per_s / p.drain_per_s:.2f}; latency p50 / p99: jobkit "
            f"{j.latency_p50_ms:.1f} / {j.latency_p99_ms:.1f} ms, plain Dramatiq "
            f"{p.latency_p50_ms:.1f} / {p.latency_p99_ms:.1f} ms"
        )


if __name__ == "__main__":
    main()
