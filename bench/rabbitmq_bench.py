"""jobkit on RabbitMQ vs raw pika, same rabbitmq-server, same run: enqueue and drain.

    .venv/bin/python bench/rabbitmq_bench.py [--quick] [--jobs N] [--single N] [--prefetch N]

`measure(quick=...)` returns one `Measurement` for jobkit and one for raw pika (bench/_rows.py);
two rounds alternate which system goes first, and each figure is the rounds' median.

Starts its own rabbitmq-server (tests/servers/rabbitmq.py) on free loopback ports. Quorum
queues, persistent messages, publisher confirms on both sides.

- enqueue, one confirm per message: raw pika ``BlockingChannel.confirm_delivery()`` +
  ``basic_publish`` per message, against ``noop.enqueue()`` per job (`--single` jobs each);
- enqueue, confirms per batch: raw pika publishing on a confirm-mode channel and waiting for
  the broker's confirms once per 1,000 messages, against ``noop.enqueue_many`` of 1,000
  (`--jobs` jobs each);
- drain: a queue pre-filled with `--jobs` jobs, then one consumer process: raw pika
  ``basic_consume`` with manual ack and prefetch `--prefetch` (json.loads + call + basic_ack),
  against ``jobkit worker -c 1 --prefetch <prefetch - 1>`` (a buffer of `--prefetch` jobs) with
  the channel's prefetch left to the adapter (``prefetch=0``: the buffer plus the jobs done but
  not yet acked, as the worker acks in batches every 20 ms; a fixed window no larger than the
  buffer makes deliveries wait for acks and drains at a third of the rate).
  Rate = jobs / (first message gone .. queue empty), read from the queue's ready count every
  10 ms (so a consumer's start-up is not counted, and the last prefetch window is not: fair
  only while both windows are bounded; jobkit's once grew to the whole queue, which read as
  0.49 where the bounded window gives 0.34-0.43).
- latency, enqueue to start, on a lightly loaded queue (`--latency` jobs, 200; 20 if quick):
  a fresh queue and a consumer configured as in the drain (raw: ``--raw-consumer ... --stamps``,
  which runs ``stamp`` instead of ``noop``; jobkit: the same ``jobkit worker`` command), warmed
  by one job whose stamp is discarded; then one job per 1/50 s (`_local.LATENCY_RATE`), each
  carrying ``sent = time.time()``, sent as in the one-confirm-per-message enqueue: raw pika
  ``basic_publish`` (persistent) of an envelope for ``stamp(sent)`` on a confirm-mode channel,
  against ``stamp.enqueue(sent)``. Both consumers run the same ``stamp`` job, which appends
  ``time.time() - sent`` to a stamps file when it starts (raw: before the ack); p50 and p99
  (nearest rank) of those.

Run as a script, prints each rate, the latency percentiles and the ratios jobkit / raw pika.
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
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import noop_app  # noqa: E402
import pika  # type: ignore[import-untyped]  # noqa: E402
from _local import LATENCY_RATE, STAMPS_ENV, warm_latency_ms  # noqa: E402
from _procs import child_env, stop  # noqa: E402
from _rows import Measurement  # noqa: E402

from jobkit import App  # noqa: E402

app = App("rabbitmq-bench")
QUORUM = {"x-queue-type": "quorum"}


@app.job(queue="bench", name="bench.noop")
def noop(i: int) -> None:
    """The benchmark job: does nothing."""


stamp = app.job(queue="bench", name="bench.stamp")(noop_app.stamp.fn)
"""The latency probe (``noop_app.stamp``'s code): appends ``time.time() - sent`` to the file
named by ``JOBKIT_BENCH_STAMPS``."""


def body(i: int) -> bytes:
    from jobkit.spi import Envelope

    return Envelope(job=noop.name, args=(i,), queue="bench").encode()


def stamp_body(sent: float) -> bytes:
    """The raw side's latency message: the envelope of ``stamp(sent)``."""
    from jobkit.spi import Envelope

    return Envelope(job=stamp.name, args=(sent,), queue="bench").encode()


def connect(port: int) -> Any:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=30))


def raw_consumer(port: int, queue: str, prefetch: int, stamps: str | None = None) -> None:
    """The raw pika consumer (run in its own process until SIGTERM). Runs ``noop`` per message;
    with `stamps` (latency mode), ``stamp`` instead, writing to that file."""
    connection = connect(port)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(ch: Any, method: Any, props: Any, data: bytes) -> None:
        noop(*json.loads(data)["args"])
        ch.basic_ack(method.delivery_tag)

    def on_stamp(ch: Any, method: Any, props: Any, data: bytes) -> None:
        stamp(*json.loads(data)["args"])  # appends started - sent, then the ack
        ch.basic_ack(method.delivery_tag)

    if stamps is not None:
        os.environ[STAMPS_ENV] = stamps
    channel.basic_consume(queue, on_message if stamps is None else on_stamp, auto_ack=False)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # measuring is over
    channel.start_consuming()
    connection.close()


def raw_publish_single(port: int, queue: str, n: int) -> float:
    connection = connect(port)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    started = time.perf_counter()
    for i in range(n):
        channel.basic_publish("", queue, body(i), props)
    elapsed = time.perf_counter() - started
    connection.close()
    return n / elapsed


def raw_publish_batched(port: int, queue: str, n: int, batch: int = 1000) -> float:
    connection = connect(port)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    impl = channel._impl  # pika's async channel: confirms without waiting per message
    state = {"ok": False, "confirmed": 0}

    def on_confirm(frame: Any) -> None:
        state["confirmed"] = max(state["confirmed"], frame.method.delivery_tag)
        connection.add_callback_threadsafe(lambda: None)  # ends process_data_events early

    impl.confirm_delivery(on_confirm, callback=lambda _: state.__setitem__("ok", True))
    while not state["ok"]:
        connection.process_data_events(time_limit=0.05)
    props = pika.BasicProperties(delivery_mode=2)
    started = time.perf_counter()
    for first in range(0, n, batch):
        last = min(first + batch, n)
        for i in range(first, last):
            impl.basic_publish("", queue, body(i), props)
        while state["confirmed"] < last:
            connection.process_data_events(time_limit=0.05)
    elapsed = time.perf_counter() - started
    connection.close()
    return n / elapsed


def raw_consumer_process(
    port: int, queue: str, prefetch: int, stamps: Path | None = None
) -> subprocess.Popen[bytes]:
    """`raw_consumer` in a process of its own (latency mode with `stamps`)."""
    extra = [] if stamps is None else ["--stamps", str(stamps)]
    return subprocess.Popen(
        [sys.executable, __file__, "--raw-consumer", str(port), queue, str(prefetch), *extra],
        env=child_env(),
    )


def jobkit_worker(base: str, prefetch: int, **env: str) -> subprocess.Popen[bytes]:
    """``jobkit worker -c 1 --prefetch <prefetch - 1>`` on queue ``bench`` of `base`, in a new
    process group (stop it with ``stop(..., group=True)``)."""
    return subprocess.Popen(
        [
            sys.executable, "-m", "jobkit.cli.main", "--app", "rabbitmq_bench:app",
            "--backend", base, "worker", "-q", "bench",
            "-c", "1", "--prefetch", str(prefetch - 1),
        ],
        env=dict(child_env(), **env),
        start_new_session=True,
    )  # fmt: skip


def await_first_stamp(stamps: Path, consumer: subprocess.Popen[bytes]) -> None:
    """Wait (up to 120 s) until the warm-up job's stamp is written: the consumer is up and has
    run one job. Raises RuntimeError if it exits or the deadline passes first."""
    deadline = time.monotonic() + 120
    while not (stamps.exists() and stamps.read_text().split()):
        if consumer.poll() is not None:
            raise RuntimeError(f"the latency consumer exited ({consumer.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError("the latency consumer ran no warm-up job in 120 s")
        time.sleep(0.02)


def raw_latency(
    port: int, queue: str, prefetch: int, count: int, stamps: Path
) -> tuple[float, float]:
    """(p50, p99) ms enqueue to start of `count` ``stamp`` messages, each published on its own
    with a confirm (persistent), to a raw consumer in latency mode, after one warm-up message."""
    connection = connect(port)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments=QUORUM)
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)

    def send(sent: float) -> None:
        channel.basic_publish("", queue, stamp_body(sent), props)

    send(time.time())  # the warm-up message, waiting for the consumer
    consumer = raw_consumer_process(port, queue, prefetch, stamps)
    try:
        await_first_stamp(stamps, consumer)
        return warm_latency_ms(stamps, send, count)
    finally:
        stop(consumer)
        connection.close()


def jobkit_latency(port: int, prefetch: int, count: int, stamps: Path) -> tuple[float, float]:
    """(p50, p99) ms enqueue to start of `count` ``stamp.enqueue(sent)`` calls, one per job, run
    by the drain's worker command on a fresh prefix, after one warm-up job."""
    base = f"amqp://guest:guest@127.0.0.1:{port}/%2F?prefix=bench{uuid.uuid4().hex[:6]}."
    app.use(base)
    stamp.enqueue(time.time())  # declares the queues; the warm-up job
    worker = jobkit_worker(base, prefetch, **{STAMPS_ENV: str(stamps)})
    try:
        await_first_stamp(stamps, worker)
        return warm_latency_ms(stamps, lambda sent: stamp.enqueue(sent), count)
    finally:
        app.close()
        stop(worker, group=True)


def ready(port: int, queue: str) -> Callable[[], int]:
    channel = connect(port).channel()
    return lambda: int(channel.queue_declare(queue, passive=True).method.message_count)


def drain(count: Callable[[], int], n: int, consumer: subprocess.Popen[bytes]) -> float:
    """Seconds from the first message leaving the queue until it is empty."""
    deadline = time.monotonic() + 600
    while count() >= n:
        if consumer.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the consumer did not start")
        time.sleep(0.01)
    started = time.perf_counter()
    while count() > 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the queue did not drain")
        time.sleep(0.01)
    return time.perf_counter() - started


@dataclass(frozen=True, kw_only=True)
class Sizes:
    jobs: int = 10_000  # enqueue_many and drain
    single: int = 2_000  # one enqueue per job
    prefetch: int = 100
    latency: int = 200  # latency jobs after the warm-up one


def run_raw(port: int, sizes: Sizes, work: Path) -> dict[str, float]:
    queue = f"raw-{uuid.uuid4().hex[:8]}"
    single = raw_publish_single(port, queue + "-single", sizes.single)
    batched = raw_publish_batched(port, queue, sizes.jobs)
    consumer = raw_consumer_process(port, queue, sizes.prefetch)
    try:
        seconds = drain(ready(port, queue), sizes.jobs, consumer)
    finally:
        stop(consumer)
    stamps = work / f"{queue}-stamps.txt"
    p50, p99 = raw_latency(port, queue + "-latency", sizes.prefetch, sizes.latency, stamps)
    return {
        "single": single,
        "many": batched,
        "drain": sizes.jobs / seconds,
        "p50": p50,
        "p99": p99,
    }


def run_jobkit(port: int, sizes: Sizes, work: Path) -> dict[str, float]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    base = f"amqp://guest:guest@127.0.0.1:{port}/%2F?prefix={prefix}"
    app.use(base)
    noop.enqueue(-1)  # connects and declares the queues before timing, as the raw side does
    started = time.perf_counter()
    for i in range(sizes.single):
        noop.enqueue(i)
    single = sizes.single / (time.perf_counter() - started)
    count = ready(port, f"{prefix}bench")
    started = time.perf_counter()
    for first in range(0, sizes.jobs, 1000):
        noop.enqueue_many([(i,) for i in range(first, min(first + 1000, sizes.jobs))])
    many = sizes.jobs / (time.perf_counter() - started)
    app.close()
    total = sizes.jobs + sizes.single + 1
    worker = jobkit_worker(base, sizes.prefetch)
    try:
        seconds = drain(count, total, worker)
    finally:
        stop(worker, group=True)
    stamps = work / f"{prefix}stamps.txt"
    p50, p99 = jobkit_latency(port, sizes.prefetch, sizes.latency, stamps)
    return {"single": single, "many": many, "drain": total / seconds, "p50": p50, "p99": p99}


def measure(*, quick: bool, sizes: Sizes | None = None) -> list[Measurement]:
    """jobkit and raw pika on one rabbitmq-server of its own, in rounds alternating which goes
    first (2 rounds; `quick`: 1 round of 500 jobs, 20 latency jobs); each figure is the rounds'
    median."""
    from tests.servers.rabbitmq import start_rabbitmq

    sizes = sizes or (Sizes(jobs=500, single=100, latency=20) if quick else Sizes())
    runs: dict[str, list[dict[str, float]]] = {"pika": [], "jobkit": []}
    server = start_rabbitmq()
    try:
        with tempfile.TemporaryDirectory(prefix="jobkit-bench-rabbitmq-") as tmp:
            for round_ in range(1 if quick else 2):
                order = [("pika", run_raw), ("jobkit", run_jobkit)]
                for system, run in order[:: -1 if round_ % 2 else 1]:
                    runs[system].append(run(server.port, sizes, Path(tmp)))
    finally:
        server.stop()
    notes = (
        f"quorum queues, persistent, confirms on both sides; enqueue_many in batches of 1,000; "
        f"drain by 1 process with prefetch {sizes.prefetch} (jobkit: worker -c 1 --prefetch "
        f"{sizes.prefetch - 1}); latency: {sizes.latency} jobs at {LATENCY_RATE:g}/s, "
        f"one confirm each, same consumer settings"
    )
    return [
        Measurement(
            backend="rabbitmq",
            system=system,
            jobs=sizes.jobs,
            enqueue_per_s=median(r["single"] for r in rows),
            enqueue_many_per_s=median(r["many"] for r in rows),
            drain_per_s=median(r["drain"] for r in rows),
            latency_p50_ms=median(r["p50"] for r in rows),
            latency_p99_ms=median(r["p99"] for r in rows),
            notes=notes,
        )
        for system, rows in runs.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--latency", type=int, default=200, help="latency jobs (after warm-up)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 jobs, 1 round")
    parser.add_argument("--raw-consumer", nargs=3, metavar=("PORT", "QUEUE", "PREFETCH"))
    parser.add_argument("--stamps", help="with --raw-consumer: latency mode, stamps to this file")
    args = parser.parse_args()
    if args.raw_consumer:
        port, queue, prefetch = args.raw_consumer
        raw_consumer(int(port), queue, int(prefetch), args.stamps)
        return 0
    sizes = (
        None
        if args.quick
        else Sizes(jobs=args.jobs, single=args.single, prefetch=args.prefetch, latency=args.latency)
    )
    raw, ours = measure(quick=args.quick, sizes=sizes)
    for label, field in (
        ("enqueue, confirm per message", "enqueue_per_s"),
        ("enqueue_many, confirms per 1,000", "enqueue_many_per_s"),
        ("drain, 1 process", "drain_per_s"),
    ):
        mine, theirs = getattr(ours, field), getattr(raw, field)
        print(
            f"{label}: raw pika {theirs:,.0f} jobs/s, jobkit {mine:,.0f} jobs/s, "
            f"ratio {mine / theirs:.2f}"
        )
    for label, field in (("latency p50", "latency_p50_ms"), ("latency p99", "latency_p99_ms")):
        mine, theirs = getattr(ours, field), getattr(raw, field)
        print(f"{label}: raw pika {theirs:.1f} ms, jobkit {mine:.1f} ms, ratio {mine / theirs:.2f}")
    print(raw.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
