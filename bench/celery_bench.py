"""Benchmark jobkit-on-Celery against plain Celery: same broker, same no-op task, same worker.

Both run a Celery prefork worker with the same settings (late ack, reject on worker lost,
prefetch multiplier 1, JSON, concurrency 2, log level WARNING, no gossip/mingle); on RabbitMQ
both declare their queue alike, with ``x-max-priority: 10`` and a dead-letter exchange (the
priority queue alone costs plain Celery about 5% of its drain rate on RabbitMQ;
``PLAIN_QUEUE_ARGS=none`` in the environment declares plain Celery's queue without arguments).
The only differences are what jobkit adds: its envelope header, its consumer's check of each
message, its Redis transport subclass (delays, heartbeat, poison check) and its job records
(per job: a start counted before the run and the outcome written before the ack). On RabbitMQ
jobkit runs twice, with the README's URL (no job records) and with ``store=`` Redis.

Enqueue: N jobs per system one call at a time (``task.delay(i, n)`` vs ``job.enqueue(i, n)``)
with no worker running, the systems taking turns of 50 calls (`_local.interleaved_enqueue`, so
that a drift of the shared machine's speed falls on all alike; blocks of a thousand calls, one
system after the other, moved the ratio by up to ±0.1 between runs); then the queues are
emptied. Drain: the N jobs per system in blocks (``--rounds``, default 5 of N/5), rotating which
system goes first: enqueue the block, then start the worker and time the drain. The drain time
comes from marks the job itself writes: jobs ``i < 4`` and ``i >= n - 8`` RPUSH
``time.time()`` to a Redis list in another db; the other jobs do nothing.

Latency (enqueue-to-start), after the blocks: each system's worker, started as for the drain
and warmed by a few stamp jobs sent at once, gets 200 stamp jobs one at a time at 50 per second
(``--latency-jobs``; `_local.paced`); each appends its start time minus its send time to a file
(`_stamp`, as ``noop_app.stamp``); p50 and p99 of those.

    .venv/bin/python bench/celery_bench.py [--jobs 10000] [--broker redis|amqp]

It starts its own redis-server (and rabbitmq-server for amqp) on free ports and stops them.
Speed figures live here, never in tests. ``--options K=V&...`` runs jobkit once, on its URL
with these options added (``--options store=none`` on Redis: without job records).

Measured 2026-11-23, ``--jobs 5000``, shared 2-core machine (runs vary by about ±0.2), drain
ratio jobkit / plain Celery:

* Redis: 0.88 with a STARTED event written per job (Lua: dedup check + RPUSH); 1.16 and 0.77
  with the plain EXISTS check that replaced it.
* RabbitMQ: 0.52 before; 0.58 and 0.60 after (plain 1484 jobs/s, jobkit 885 jobs/s);
  ``store=none`` 0.86 (jobkit 1237 jobs/s). The two store calls per job still cost about a
  third of the drain rate on RabbitMQ; the target of 0.95 is not reached.

Measured 2026-12-02, Redis, ``--jobs 5000``, while other tests ran (noisier), the atomic
hand-over (pop script + doorbell) against the BRPOP transport before it, runs alternated:
drain 1.02 and 0.90 (before: 0.59 and 0.80), enqueue 0.70 and 0.76 (before: 0.84 and 0.93).
Taking a message costs less (one script call instead of BRPOP plus kombu's MULTI; 124-152 us
against 254-479 us per message in a loop on a local redis-server); each enqueue now also
rings the queue's doorbell in the same MULTI (XADD), about 10-15% of the enqueue rate.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import _local  # noqa: E402  (bench/ is on the path: the script's directory)
import noop_app  # noqa: E402

if TYPE_CHECKING:
    from _rows import Measurement

QUEUE = "bench"  # jobkit's; plain Celery uses its own (RabbitMQ: other queue arguments)
PLAIN_QUEUE = "bench-plain"
CONCURRENCY = 2
MARKS_ENV = "CELERY_BENCH_MARKS"


def _mark(i: int, n: int) -> None:
    if 0 <= i < 4 or i >= n - 8 >= 0:
        import redis

        client = redis.Redis.from_url(os.environ[MARKS_ENV])
        client.rpush("marks", time.time())
        client.close()


_stamp = noop_app.stamp.fn
"""The latency probe: appends its start time minus `sent` to the file ``JOBKIT_BENCH_STAMPS``."""


# -- the two systems ---------------------------------------------------------------------------


def _plain_queue_arguments(broker_url: str) -> dict[str, Any] | None:
    """On RabbitMQ, plain Celery's queue is declared as jobkit declares its own: a priority
    queue (``x-max-priority``, which makes RabbitMQ do more per message) with a dead-letter
    exchange. `PLAIN_QUEUE_ARGS=none` in the environment declares a queue without arguments."""
    if not broker_url.startswith("amqp") or os.environ.get("PLAIN_QUEUE_ARGS") == "none":
        return None
    return {  # as jobkit-celery's work queues (jobkit_celery._amqp_ops.work_queue_arguments)
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{PLAIN_QUEUE}.dead",
        "x-max-priority": 10,
    }


def plain_celery(broker_url: str) -> Any:
    from celery import Celery  # type: ignore[import-untyped]
    from kombu import Queue  # type: ignore[attr-defined]

    app = Celery("plain", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=PLAIN_QUEUE,
        task_queues=[
            Queue(PLAIN_QUEUE, queue_arguments=_plain_queue_arguments(broker_url))  # type: ignore[no-untyped-call]
        ],
        worker_hijack_root_logger=False,
        broker_transport_options={"confirm_publish": True}
        if broker_url.startswith("amqp")
        else {"visibility_timeout": 60},
    )

    @app.task(name="noop")  # type: ignore[untyped-decorator]
    def noop(i: int, n: int) -> None:
        _mark(i, n)

    app.task(name="stamp")(_stamp)
    return app, noop


def jobkit_app(backend_url: str) -> Any:
    import jobkit

    app = jobkit.App("bench", backend=backend_url)

    @app.job(name="noop", queue=QUEUE)
    def noop(i: int, n: int) -> None:
        _mark(i, n)

    app.job(name="stamp", queue=QUEUE)(_stamp)
    return app, noop


# -- worker processes --------------------------------------------------------------------------


def run_worker(kind: str, url: str) -> None:
    """Entry point of the worker subprocess."""
    if kind == "plain":
        app, _ = plain_celery(url)
        worker = app.Worker(
            queues=[PLAIN_QUEUE], concurrency=CONCURRENCY, pool_cls="prefork", loglevel="WARNING",
            optimization="fair", without_gossip=True, without_mingle=True, quiet=True,
        )  # fmt: skip
        worker.start()
        return

    from jobkit.spi import WorkerOptions

    app, _ = jobkit_app(url)
    options = WorkerOptions(
        app_path="celery_bench:app",
        queues=(QUEUE,),
        concurrency=CONCURRENCY,
        prefetch=1,
        lease=timedelta(seconds=60),
        extra={"loglevel": "WARNING"},
    )
    app.backend.run_worker(app, options)


def start_worker(
    kind: str, url: str, marks_url: str, stamps: Path | None = None
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, **{MARKS_ENV: marks_url}, PYTHONPATH=str(ROOT))
    if stamps is not None:
        env[_local.STAMPS_ENV] = str(stamps)
    return subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, url],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


# -- one measured run --------------------------------------------------------------------------


def _enqueue_s(urls: dict[str, str], n: int) -> dict[str, float]:
    """Seconds each system took to enqueue `n` jobs one call at a time (``task.delay(i, n)``
    vs ``job.enqueue(i, n)``), in turns (`_local.interleaved_enqueue`: all under the same
    drift of the machine's speed), each on a client opened for this and warmed by one job
    outside the timing. The jobs stay queued (`_purge` removes them)."""
    apps: list[Any] = []
    sends: dict[str, Any] = {}
    for kind, url in urls.items():
        if kind == "plain":
            app, task = plain_celery(url)
            task.delay(-1, 0)  # connects and declares the queue
            sends[kind] = _local.one_by_one(task.delay, n)
        else:
            app, job = jobkit_app(url)
            job.enqueue(-1, 0)
            sends[kind] = _local.one_by_one(job.enqueue, n)
        apps.append(app)
    try:
        return _local.interleaved_enqueue(sends, n)
    finally:
        for app in apps:
            app.close()


def _purge(redis_url: str, rabbit_url: str | None) -> None:
    """Empty the Redis server and, on RabbitMQ, both systems' queues."""
    import redis
    from kombu import Connection  # type: ignore[attr-defined]

    redis.Redis.from_url(f"{redis_url}/0").flushall()
    if rabbit_url is not None:
        with Connection(rabbit_url) as conn:  # type: ignore[no-untyped-call]
            for queue in (QUEUE, PLAIN_QUEUE):
                conn.default_channel.queue_purge(queue)


def _block(kind: str, url: str, marks_url: str, n: int) -> float:
    """Seconds `kind`'s worker took to drain `n` jobs, enqueued before it started."""
    import redis

    marks = redis.Redis.from_url(marks_url)
    marks.delete("marks")
    if kind == "plain":
        app, task = plain_celery(url)
        for i in range(n):
            task.delay(i, n)
    else:
        app, job = jobkit_app(url)
        for i in range(n):
            job.enqueue(i, n)
    app.close()
    worker = start_worker(kind, url, marks_url)
    try:
        deadline = time.monotonic() + 600
        while marks.llen("marks") < 12:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{kind}: the drain did not finish")
            time.sleep(0.05)
        stamps = sorted(float(x) for x in marks.lrange("marks", 0, -1))
    finally:
        stop_worker(worker)
        marks.close()
    if os.environ.get("CELERY_BENCH_DEBUG"):
        print(kind, [round(x - stamps[0], 3) for x in stamps], flush=True)
    # the first mark is job 0's start; the others come from the first 4 and last 8 jobs
    return (stamps[-1] - stamps[0]) * n / (n - 4)


def _latency_ms(kind: str, url: str, marks_url: str, count: int) -> tuple[float, float]:
    """(p50, p99) enqueue-to-start latency in ms of `count` stamp jobs sent one at a time at
    `_local.LATENCY_RATE` to a warm worker of `kind` (started as for the drain; warm once the
    stamp jobs sent at once before them have run, which the figures leave out)."""
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-celery-") as tmp:
        stamps = Path(tmp) / "stamps"
        if kind == "plain":
            app, _ = plain_celery(url)
            send = app.tasks["stamp"].delay
        else:
            app, _ = jobkit_app(url)
            send = app.jobs["stamp"].enqueue
        worker = start_worker(kind, url, marks_url, stamps)
        try:
            warm = 2 * CONCURRENCY  # sent at once, so that every pool process runs one
            for _ in range(warm):
                send(time.time())
            return _local.warm_latency_ms(stamps, send, count, warm=warm)
        finally:
            stop_worker(worker)
            app.close()


def _enqueue_many_s(url: str, n: int) -> float:
    """Seconds jobkit's `enqueue_many` takes for `n` jobs in batches of 100 (jobs left queued)."""
    app, job = jobkit_app(url)
    try:
        job.enqueue(-1, 0)
        start = time.perf_counter()
        for first in range(0, n, 100):
            job.enqueue_many([(i, n) for i in range(first, min(first + 100, n))])
        return time.perf_counter() - start
    finally:
        app.close()


def compare(
    broker: str, jobs: int, rounds: int, options: str = "", latency_jobs: int = 0
) -> dict[str, dict[str, float]]:
    """Run plain Celery and jobkit on `broker` ("redis" or "amqp"), `jobs` each in `rounds`
    blocks (the order rotating each round), on servers of its own; returns per system the
    rates in jobs/s ("enqueue", "drain", and for jobkit "enqueue_many") and, with
    `latency_jobs`, the enqueue-to-start latency of that many jobs in ms ("p50", "p99"; see
    `_latency_ms`). Prints one line per drain block. On RabbitMQ jobkit runs twice: "jobkit" with
    the URL as the README writes it (no job records) and "jobkit-store" with its job records in
    Redis (``store=``); `options` (extra URL options) replaces both with one "jobkit" run."""
    import redis

    from tests.servers.redis import start_redis

    redis_server = start_redis(persistent=False)  # as measured so far: no append-only file
    rabbit = None
    try:
        marks_url = f"{redis_server.url}/1"
        if broker == "redis":
            urls = {
                "plain": f"{redis_server.url}/0",
                "jobkit": f"celery+{redis_server.url}/2?visibility_timeout=60"
                + (f"&{options}" if options else ""),
            }
        else:
            from tests.servers.rabbitmq import start_rabbitmq

            rabbit = start_rabbitmq()
            urls = {"plain": rabbit.url}
            if options:
                urls["jobkit"] = f"celery+{rabbit.url}?{options}"
            else:
                urls["jobkit"] = f"celery+{rabbit.url}"
                urls["jobkit-store"] = f"celery+{rabbit.url}?store={redis_server.url}/2"
        block = max(jobs // rounds, 20)
        done = block * rounds
        kinds = list(urls)
        enqueue_s = _enqueue_s(urls, done)
        _purge(redis_server.url, rabbit.url if rabbit is not None else None)
        drain_s = dict.fromkeys(kinds, 0.0)
        for r in range(rounds):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                drain = _block(kind, urls[kind], marks_url, block)
                drain_s[kind] += drain
                redis.Redis.from_url(f"{redis_server.url}/0").flushall()
                print(
                    f"celery+{broker} round {r + 1} {kind:>12}: drain {block / drain:6.0f} jobs/s",
                    flush=True,
                )
        results = {
            kind: {"enqueue": done / enqueue_s[kind], "drain": done / drain_s[kind]}
            for kind in kinds
        }
        for kind in kinds[1:]:
            results[kind]["enqueue_many"] = done / _enqueue_many_s(urls[kind], done)
        for kind in kinds if latency_jobs else []:
            p50, p99 = _latency_ms(kind, urls[kind], marks_url, latency_jobs)
            results[kind].update(p50=p50, p99=p99)
            print(f"celery+{broker} {kind:>12}: latency p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        return results
    finally:
        if rabbit is not None:
            rabbit.stop()
        redis_server.stop()


def measure(*, quick: bool) -> list[Measurement]:
    """`bench._rows` convention: jobkit and plain Celery on celery+redis and celery+amqp (and
    jobkit with job records on celery+amqp), latency included (`_latency_ms`)."""
    from _rows import Measurement

    jobs, rounds, latency_jobs = (40, 2, 20) if quick else (5000, 5, 200)
    out: list[Measurement] = []
    for broker in ("redis", "amqp"):
        results = compare(broker, jobs, rounds, latency_jobs=latency_jobs)
        done = max(jobs // rounds, 20) * rounds
        notes = f"concurrency {CONCURRENCY}, prefetch 1, acks late"
        rows = [("jobkit", f"celery+{broker}", notes + ", records in the broker's Redis")]
        if broker == "amqp":
            notes += ", both declare the queue with x-max-priority 10 and a dead-letter exchange"
            rows = [
                ("jobkit", "celery+amqp", notes + ", no job records (the README's URL)"),
                ("jobkit-store", "celery+amqp (store=redis)", notes + ", records in Redis"),
            ]
        for kind, backend, row_notes in rows:
            for system, key in (("jobkit", kind), ("celery", "plain")):
                figures = results[key]
                out.append(
                    Measurement(
                        backend=backend, system=system, jobs=done,
                        enqueue_per_s=figures["enqueue"],
                        enqueue_many_per_s=figures.get("enqueue_many"),
                        drain_per_s=figures["drain"], latency_p50_ms=figures["p50"],
                        latency_p99_ms=figures["p99"], notes=row_notes,
                    )
                )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per system in all")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="the jobs are run in this many blocks, alternating which system goes first",
    )
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    parser.add_argument(
        "--options", default="", help="extra jobkit URL options, e.g. store=none (experiments)"
    )
    parser.add_argument(
        "--latency-jobs", type=int, default=200, help="jobs to time enqueue-to-start (0: none)"
    )
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(*args.worker)
        return
    results = compare(args.broker, args.jobs, args.rounds, args.options, args.latency_jobs)
    for kind, rates in results.items():
        print(
            f"{kind:>12}: "
            + "   ".join(
                f"{k} {v:8.2f} ms" if k in ("p50", "p99") else f"{k} {v:8.0f} jobs/s"
                for k, v in rates.items()
            )
        )
    plain = results["plain"]
    for kind, rates in results.items():
        if kind != "plain":
            print(
                f"Celery+{args.broker}, {args.jobs} jobs, concurrency {CONCURRENCY}: "
                f"{kind} / plain Celery = enqueue {rates['enqueue'] / plain['enqueue']:.2f}, "
                f"drain {rates['drain'] / plain['drain']:.2f}"
            )


if __name__ == "__main__":
    main()
