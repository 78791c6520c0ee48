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

Run as a script, prints each rate and the ratios jobkit / raw pika.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # type: ignore[import-untyped]  # noqa: E402
from _procs import child_env, stop  # noqa: E402
from _rows import Measurement  # noqa: E402

from jobkit import App  # noqa: E402

app = App("rabbitmq-bench")
QUORUM = {"x-queue-type": "quorum"}


@app.job(queue="bench", name="bench.noop")
def noop(i: int) -> None:
    """The benchmark job: does nothing."""


def body(i: int) -> bytes:
    from jobkit.spi import Envelope

    return Envelope(job=noop.name, args=(i,), queue="bench").encode()


def connect(port: int) -> Any:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=30))


def raw_consumer(port: int, queue: str, prefetch: int) -> None:
    """The raw pika consumer (run in its own process until SIGTERM)."""
    connection = connect(port)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(ch: Any, method: Any, props: Any, data: bytes) -> None:
        noop(*json.loads(data)["args"])
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message, auto_ack=False)
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


def run_raw(port: int, sizes: Sizes) -> dict[str, float]:
    queue = f"raw-{uuid.uuid4().hex[:8]}"
    single = raw_publish_single(port, queue + "-single", sizes.single)
    batched = raw_publish_batched(port, queue, sizes.jobs)
    consumer = subprocess.Popen(
        [sys.executable, __file__, "--raw-consumer", str(port), queue, str(sizes.prefetch)],
        env=child_env(),
    )
    try:
        seconds = drain(ready(port, queue), sizes.jobs, consumer)
    finally:
        stop(consumer)
    return {"single": single, "many": batched, "drain": sizes.jobs / seconds}


def run_jobkit(port: int, sizes: Sizes) -> dict[str, float]:
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
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "jobkit.cli.main", "--app", "rabbitmq_bench:app",
            "--backend", base, "worker", "-q", "bench",
            "-c", "1", "--prefetch", str(sizes.prefetch - 1),
        ],
        env=child_env(),
        start_new_session=True,
    )  # fmt: skip
    try:
        seconds = drain(count, total, worker)
    finally:
        stop(worker, group=True)
    return {"single": single, "many": many, "drain": total / seconds}


def measure(*, quick: bool, sizes: Sizes | None = None) -> list[Measurement]:
    """jobkit and raw pika on one rabbitmq-server of its own, in rounds alternating which goes
    first (2 rounds; `quick`: 1 round of 500 jobs); each figure is the rounds' median."""
    from tests.servers.rabbitmq import start_rabbitmq

    sizes = sizes or (Sizes(jobs=500, single=100) if quick else Sizes())
    runs: dict[str, list[dict[str, float]]] = {"pika": [], "jobkit": []}
    server = start_rabbitmq()
    try:
        for round_ in range(1 if quick else 2):
            order = [("pika", run_raw), ("jobkit", run_jobkit)]
            for system, run in order[:: -1 if round_ % 2 else 1]:
                runs[system].append(run(server.port, sizes))
    finally:
        server.stop()
    notes = (
        f"quorum queues, persistent, confirms on both sides; enqueue_many in batches of 1,000; "
        f"drain by 1 process with prefetch {sizes.prefetch} (jobkit: worker -c 1 --prefetch "
        f"{sizes.prefetch - 1})"
    )
    return [
        Measurement(
            backend="rabbitmq",
            system=system,
            jobs=sizes.jobs,
            enqueue_per_s=median(r["single"] for r in rows),
            enqueue_many_per_s=median(r["many"] for r in rows),
            drain_per_s=median(r["drain"] for r in rows),
            latency_p50_ms=None,
            latency_p99_ms=None,
            notes=notes,
        )
        for system, rows in runs.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--single", type=int, default=2_000)
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 500 jobs, 1 round")
    parser.add_argument("--raw-consumer", nargs=3, metavar=("PORT", "QUEUE", "PREFETCH"))
    args = parser.parse_args()
    if args.raw_consumer:
        port, queue, prefetch = args.raw_consumer
        raw_consumer(int(port), queue, int(prefetch))
        return 0
    sizes = (
        None if args.quick else Sizes(jobs=args.jobs, single=args.single, prefetch=args.prefetch)
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
    print(raw.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
