"""jobkit on SQS vs a plain boto3 loop, same moto server, same run.

    .venv/bin/python bench/sqs_bench.py [--jobs 1000] [--wave 50] [--reps 1] [--latency-jobs 200]

Starts its own moto server (``moto[server]``) on a free loopback port. Each round measures both
sides' enqueue in turns, then the rest one side after the other (which goes first alternates
from round to round), each on fresh queues; every figure is the median over the rounds
(`--reps`; ``measure()``: 3, 1 if quick).

Enqueue: N jobs (`--jobs`) with the drain's message body (jobkit's envelope of ``noop(i)``) into
a fresh queue of each side, after one warm-up send, the two sides taking turns (50 jobs a turn
one call at a time, `_local.BATCH` batched); rate = N / time of that side's turns. One call per
job: jobkit ``noop.enqueue(i)`` vs boto3 ``send_message``. Batched: jobkit ``noop.enqueue_many``
in calls of 500 (`_local.BATCH`; SendMessageBatch of 10 underneath) vs boto3
``send_message_batch`` of 10 entries per call (SQS's maximum). Nothing consumes these queues;
they are deleted afterwards.

Drain: one consumer process is started and warmed up, then a feeder in this process sends N
no-op jobs in waves that keep the queue under about 100 messages (it sends a wave of `--wave`
whenever fewer than `--wave` messages are in the queue). Throughput = N / (first send .. queue
empty).

- plain: a boto3 consumer process: ReceiveMessage(10, long poll) -> json.loads + call -> one
  DeleteMessageBatch; the feeder sends with SendMessageBatch of 10.
- jobkit: ``jobkit worker -c 2 --prefetch 5`` on an ``sqs://`` URL; the feeder enqueues with
  ``job.enqueue_many`` (SendMessageBatch of 10 underneath).

Latency (enqueue-to-start, p50/p99 ms, nearest rank): a fresh consumer as in the drain (the
jobkit worker with the same options; the plain loop in its latency mode: it calls ``stamp``
instead of ``noop``) runs with ``JOBKIT_BENCH_STAMPS`` set; once the 4 warm-up jobs sent at
once have run, this process sends `--latency-jobs` jobs (200; 20 if quick) one at a time at
``_local.LATENCY_RATE`` (50/s): jobkit ``stamp.enqueue(time.time())``, boto3 ``send_message`` of
the same envelope. The job appends ``time.time() - sent`` to the stamps file
(``noop_app.stamp``'s code, for both). Both consumers long-poll, so moto answers a waiting
ReceiveMessage as soon as a message lands.

Environment: ``SQS_BENCH_WORKER_ARGS`` (default ``-c 2 --prefetch 5``) sets the worker's options;
``SQS_BENCH_WORKER`` replaces ``-m jobkit.cli.main`` (for a profiling wrapper).

Why waves: moto 5.2.5 scans every stored message on each call, so its rate falls from ~140 to
~25 jobs/s as the depth grows from 100 to 1,000; a deep queue would measure moto, not jobkit.
The figures are moto's, not SQS's: only the ratio means anything.

Measured 2026-11-23 on the shared 2-core machine (moto 5.2.5, boto3 1.44.5), 3 reps of 1,000.
Before the worker leased in batches: plain boto3 121 jobs/s, jobkit 91, ratio 0.75 [0.67-0.82]
(~0.2 ReceiveMessage and ~0.2 DeleteMessageBatch calls per job against the plain loop's 0.1 + 0.1;
moto's cost is per call). Since the worker waits for room for 10 while jobs wait for a process:
plain 136 jobs/s, jobkit 126, ratio 0.88 [0.81-1.05].

2026-12-04, a quiet 2-vCPU Intel Xeon (plain boto3 ~930-980 jobs/s): 0.61-0.64 until the
worker wrote its pending acks within the batch interval instead of at the next batch's arrival
(receives and deletes had strictly alternated), 0.84-0.90 since. Then (medians of 5 rounds,
15:00-16:10 UTC): 0.90-0.91 once jobkit's messages stopped carrying a `jobkit-id` attribute
(moto deep-copies each message it hands out, attributes included: 1.24 against 1.13 ms of moto
CPU per job before, the same since); 0.98-1.00 once the worker also wrote its acks after 1 ms
without a job instead of up to 20 ms later (this feeder waits for deletes before it sends; after
5 ms: 0.90-0.91).

A trace of every call of both consumers: `SQS_BENCH_WORKER` can name a wrapper that patches
botocore and then runs `jobkit.cli.main`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # type: ignore[import-untyped]  # noqa: E402
import noop_app  # noqa: E402
from _local import (  # noqa: E402
    BATCH,
    LATENCY_RATE,
    STAMPS_ENV,
    interleaved_enqueue,
    median_of,
    one_by_one,
    warm_latency_ms,
)
from _procs import child_env, stop  # noqa: E402
from _rows import Measurement  # noqa: E402

from jobkit import App  # noqa: E402

app = App("sqs-bench")
WORKER_ARGS = os.environ.get("SQS_BENCH_WORKER_ARGS", "-c 2 --prefetch 5").split()
SQS_BATCH = 10
"""Entries per SendMessageBatch: SQS's maximum."""
WARM = 4
"""Latency warm-up jobs, sent at once and left out: each of jobkit's two job processes likely
runs one."""


@app.job(queue="bench", name="bench.noop")
def noop(i: int) -> None:
    """The benchmark job: does nothing."""


stamp = app.job(queue="bench", name="bench.stamp")(noop_app.stamp.fn)
"""The latency probe, ``noop_app.stamp``'s code: appends ``time.time() - sent`` to the file
named by ``JOBKIT_BENCH_STAMPS``. The plain consumer's latency mode calls the same function."""


def plain_consumer(endpoint: str, queue_url: str, job: Callable[..., None] = noop) -> None:
    """The plain boto3 loop (run in its own process until SIGTERM), calling `job` with each
    message's args: `noop` for the drain, `stamp` for the latency."""
    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop:
        got = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        for message in got:
            job(*json.loads(message["Body"])["args"])
        if got:
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
                ],
            )


def feed(
    n: int, wave: int, depth: Callable[[], int], send_wave: Callable[[int, int], None]
) -> float:
    """Send `n` jobs in waves while the depth stays low; return seconds until the queue is empty."""
    started = time.perf_counter()
    sent = 0
    while True:
        current = depth()
        if sent < n and current < wave:
            count = min(wave, n - sent)
            send_wave(sent, count)
            sent += count
            continue
        if sent >= n and current == 0:
            return time.perf_counter() - started
        time.sleep(0.02)


def depth_of(sqs: Any, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attrs[name]) for name in names)


def body(i: int) -> str:
    """The message body of ``noop(i)``: jobkit's envelope, as the plain loop's jobs carry it."""
    from jobkit.spi import Envelope

    return Envelope(job=noop.name, args=(i,), queue="bench").encode().decode()


def stamp_body(sent: float) -> str:
    """The message body of ``stamp(sent)`` (jobkit's envelope) for the plain latency loop."""
    from jobkit.spi import Envelope

    return Envelope(job=stamp.name, args=(sent,), queue="bench").encode().decode()


def send_batches(sqs: Any, url: str, first: int, count: int) -> None:
    """``body(i)`` for i in first .. first+count-1, in SendMessageBatch calls of 10."""
    for start in range(first, first + count, SQS_BATCH):
        entries = [
            {"Id": str(i), "MessageBody": body(i)}
            for i in range(start, min(start + SQS_BATCH, first + count))
        ]
        sqs.send_message_batch(QueueUrl=url, Entries=entries)


def client(endpoint: str) -> Any:
    return boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)


def jobkit_backend(endpoint: str) -> tuple[str, str]:
    """(an ``sqs://`` URL on a fresh queue prefix, that prefix)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}-"
    return f"sqs://?region=us-east-1&endpoint_url={endpoint}&prefix={prefix}", prefix


def jobkit_worker(backend: str, **env: str) -> subprocess.Popen[bytes]:
    """``jobkit worker -q bench`` with `WORKER_ARGS` on `backend`, in its own process group."""
    return subprocess.Popen(
        [
            sys.executable, *os.environ.get("SQS_BENCH_WORKER", "-m jobkit.cli.main").split(),
            "--app", "sqs_bench:app",
            "--backend", backend, "worker", "-q", "bench", *WORKER_ARGS,
        ],
        env=dict(child_env(), **env),
        start_new_session=True,
    )  # fmt: skip


def plain_process(endpoint: str, url: str, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """The plain boto3 consumer (`plain_consumer`) in a process of its own."""
    return subprocess.Popen(
        [sys.executable, __file__, "--plain-consumer", endpoint, url, *extra],
        env=dict(child_env(), **env),
    )


def delete_queues(sqs: Any, prefix: str) -> None:
    """Delete every queue whose name starts with `prefix` (moto keeps their messages in memory)."""
    for url in sqs.list_queues(QueueNamePrefix=prefix).get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)


# -- enqueue -----------------------------------------------------------------------------------


def enqueue_rates(endpoint: str, n: int) -> dict[str, tuple[float, float]]:
    """Per system, (jobs/s with one call per job, jobs/s in batches): `n` jobs with the drain's
    body into a fresh queue of each system after one warm-up send, the two systems taking turns
    (`_local.interleaved_enqueue`; moto's cost per call grows with the queue's depth, which
    turns keep alike on both sides). One call per job: boto3 ``send_message`` vs
    ``noop.enqueue``, turns of 50; batched: boto3 ``send_message_batch`` of 10 vs
    ``noop.enqueue_many`` of `BATCH`, turns of `BATCH` jobs."""
    sqs = client(endpoint)
    single = _enqueue_seconds(sqs, endpoint, n, batched=False)
    batched = _enqueue_seconds(sqs, endpoint, n, batched=True)
    return {system: (n / single[system], n / batched[system]) for system in single}


def _enqueue_seconds(sqs: Any, endpoint: str, n: int, *, batched: bool) -> dict[str, float]:
    name = f"plain-enq-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=body(-1))  # warm-up
    backend, prefix = jobkit_backend(endpoint)
    app.use(backend)
    try:
        noop.enqueue(-1)  # creates the queues; warm-up
        if batched:
            sends = {
                "boto3": lambda a, b: send_batches(sqs, url, a, b - a),
                "jobkit": lambda a, b: noop.enqueue_many([(i,) for i in range(a, b)]),
            }
            return interleaved_enqueue(sends, n, turn=BATCH)
        return interleaved_enqueue(
            {
                "boto3": one_by_one(lambda i: sqs.send_message(QueueUrl=url, MessageBody=body(i))),
                "jobkit": one_by_one(noop.enqueue),
            },
            n,
        )
    finally:
        app.close()
        delete_queues(sqs, name)
        delete_queues(sqs, prefix)


# -- drain -------------------------------------------------------------------------------------


def run_plain(endpoint: str, n: int, wave: int) -> float:
    """Seconds the plain consumer takes to drain `n` jobs fed in waves (see the module doc)."""
    sqs = client(endpoint)
    url = sqs.create_queue(QueueName=f"plain-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    consumer = plain_process(endpoint, url)
    try:
        sqs.send_message(QueueUrl=url, MessageBody=body(-1))  # warm-up
        _wait(lambda: depth_of(sqs, url) == 0)

        def send_wave(start: int, count: int) -> None:
            send_batches(sqs, url, start, count)

        return feed(n, wave, lambda: depth_of(sqs, url), send_wave)
    finally:
        stop(consumer)


def run_jobkit(endpoint: str, n: int, wave: int) -> float:
    """Seconds the jobkit worker takes to drain `n` jobs fed in waves (see the module doc)."""
    backend, prefix = jobkit_backend(endpoint)
    app.use(backend)
    sqs = client(endpoint)
    noop.enqueue(-1)  # creates the queues; the warm-up job
    url = sqs.get_queue_url(QueueName=f"{prefix}bench")["QueueUrl"]
    worker = jobkit_worker(backend)
    try:
        _wait(lambda: depth_of(sqs, url) == 0)

        def send_wave(start: int, count: int) -> None:
            noop.enqueue_many([(i,) for i in range(start, start + count)])

        return feed(n, wave, lambda: depth_of(sqs, url), send_wave)
    finally:
        stop(worker, group=True)
        app.close()


# -- latency -----------------------------------------------------------------------------------


def plain_latency(endpoint: str, count: int, stamps: Path) -> tuple[float, float]:
    """(p50, p99) ms enqueue-to-start of `count` ``send_message`` jobs at LATENCY_RATE, the plain
    consumer (latency mode) warm on a fresh queue."""
    sqs = client(endpoint)
    url = sqs.create_queue(QueueName=f"plain-lat-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    consumer = plain_process(endpoint, url, "--latency", **{STAMPS_ENV: str(stamps)})

    def send(sent: float) -> None:
        sqs.send_message(QueueUrl=url, MessageBody=stamp_body(sent))

    try:
        for _ in range(WARM):
            send(time.time())
        return warm_latency_ms(stamps, send, count, warm=WARM)
    finally:
        stop(consumer)


def jobkit_latency(endpoint: str, count: int, stamps: Path) -> tuple[float, float]:
    """(p50, p99) ms enqueue-to-start of `count` ``stamp.enqueue`` jobs at LATENCY_RATE, a
    jobkit worker (as in the drain) warm on a fresh queue prefix."""
    backend, _ = jobkit_backend(endpoint)
    app.use(backend)
    for _ in range(WARM):
        stamp.enqueue(time.time())  # the first creates the queues
    worker = jobkit_worker(backend, **{STAMPS_ENV: str(stamps)})
    try:
        return warm_latency_ms(stamps, lambda sent: stamp.enqueue(sent), count, warm=WARM)
    finally:
        stop(worker, group=True)
        app.close()


# -- rounds ------------------------------------------------------------------------------------


def _wait(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the consumer to warm up")
        time.sleep(0.05)


def _fake_credentials() -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(name, value)  # fake credentials, only sent to our own moto


def one_round(
    system: str,
    endpoint: str,
    jobs: int,
    wave: int,
    latency_jobs: int,
    work: Path,
    enqueued: tuple[float, float],
) -> Measurement:
    """Every other figure of one side, ``"boto3"`` (the plain loop) or ``"jobkit"``, once;
    `enqueued` is its (enqueue/s, enqueue_many/s) from `enqueue_rates`."""
    plain = system == "boto3"
    enqueue, enqueue_many = enqueued
    drain = jobs / (run_plain if plain else run_jobkit)(endpoint, jobs, wave)
    stamps = work / f"{system}-{uuid.uuid4().hex[:8]}.txt"
    p50, p99 = (plain_latency if plain else jobkit_latency)(endpoint, latency_jobs, stamps)
    setup = (
        f"1 consumer process, receive 10, long poll 1 s; send_message_batch of {SQS_BATCH}"
        if plain
        else f"worker {' '.join(WORKER_ARGS)}; enqueue_many in batches of {BATCH}"
    )
    return Measurement(
        backend="sqs",
        system=system,
        jobs=jobs,
        enqueue_per_s=enqueue,
        enqueue_many_per_s=enqueue_many,
        drain_per_s=drain,
        latency_p50_ms=p50,
        latency_p99_ms=p99,
        notes=f"moto server; {setup}; drain in waves of {wave}",
    )


def _rounds(
    jobs: int, wave: int, reps: int, latency_jobs: int, say: Callable[[str], None]
) -> list[Measurement]:
    """[jobkit, plain boto3]: each figure's median over `reps` rounds on one moto server, which
    side goes first alternating from round to round."""
    from tests.servers.moto import start_moto

    server = start_moto(proxied=False)  # no outage proxy in the measured path
    try:
        with tempfile.TemporaryDirectory(prefix="jobkit-bench-sqs-") as tmp:
            rows: dict[str, list[Measurement]] = {"boto3": [], "jobkit": []}
            for rep in range(reps):
                enqueued = enqueue_rates(server.endpoint, jobs)
                for system in ("boto3", "jobkit") if rep % 2 == 0 else ("jobkit", "boto3"):
                    found = one_round(
                        system, server.endpoint, jobs, wave, latency_jobs, Path(tmp),
                        enqueued[system],
                    )  # fmt: skip
                    rows[system].append(found)
                say(f"rep {rep + 1}: {_summary(rows['boto3'][-1], rows['jobkit'][-1])}")
            return [median_of(rows["jobkit"]), median_of(rows["boto3"])]
    finally:
        server.stop()


def _summary(plain: Measurement, ours: Measurement) -> str:
    """One line: each figure for plain boto3 and jobkit, and the drain ratio."""

    def figures(m: Measurement) -> str:
        return (
            f"enqueue {m.enqueue_per_s:.0f}/s, enqueue_many {m.enqueue_many_per_s:.0f}/s, "
            f"drain {m.drain_per_s:.1f} jobs/s, latency p50 {m.latency_p50_ms:.1f} ms "
            f"p99 {m.latency_p99_ms:.1f} ms"
        )

    assert ours.drain_per_s is not None and plain.drain_per_s is not None
    return (
        f"plain boto3: {figures(plain)}; jobkit: {figures(ours)}; "
        f"drain ratio jobkit/plain {ours.drain_per_s / plain.drain_per_s:.2f}"
    )


def measure(*, quick: bool) -> list[Measurement]:
    """Enqueue rates (one call per job, batched), drain rates and enqueue-to-start latency of
    jobkit and plain boto3 on one moto server (see the module doc): 100 jobs and 20 latency jobs
    once when `quick`, else 1,000 jobs and 200 latency jobs, medians of 3 rounds."""
    _fake_credentials()
    jobs, latency_jobs, reps = (100, 20, 1) if quick else (1000, 200, 3)
    return _rounds(jobs, 50, reps, latency_jobs, lambda line: None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--wave", type=int, default=50)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--plain-consumer", nargs=2, metavar=("ENDPOINT", "QUEUE_URL"))
    parser.add_argument(
        "--latency", action="store_true", help="with --plain-consumer: run stamp, not noop"
    )
    args = parser.parse_args()
    _fake_credentials()
    if args.plain_consumer:
        endpoint, queue_url = args.plain_consumer
        plain_consumer(endpoint, queue_url, job=stamp if args.latency else noop)
        return 0
    ours, plain = _rounds(
        args.jobs, args.wave, args.reps, args.latency_jobs, lambda line: print(line, flush=True)
    )
    print(
        f"SQS on moto, {args.jobs} jobs (drain in waves of {args.wave}, queue < {2 * args.wave}), "
        f"{args.latency_jobs} latency jobs at {LATENCY_RATE:g}/s, medians of {args.reps}: "
        f"{_summary(plain, ours)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
