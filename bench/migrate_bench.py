"""Benchmark `jobkit migrate`: the migration rate from an SQLite source into a target, against
the target's own `enqueue_many` rate measured in the same run (target ratio: 0.5 or better);
medians of interleaved rounds.

    .venv/bin/python bench/migrate_bench.py [--jobs 10000] [--batch 500] [--targets sqlite,redis]

Targets: ``sqlite`` (another file), ``sqs`` (a moto server started here, no outage proxy, job
store in SQLite), ``redis`` (Celery on a redis-server started here), ``amqp`` (Celery on a
rabbitmq-server started here, job store in Redis; its queue is shared by the rounds, so each
round's enqueue figure includes a deeper queue). The migration runs the
same engine as the command (export, capability check, import, confirm, commit), without the
progress bar. Speed figures live here, never in tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from noop_app import app, noop  # noqa: E402

from jobkit.spi import Migration, migrate, open_backend  # noqa: E402


def enqueue_rate(url: str, jobs: int, batch: int) -> float:
    app.use(url)
    try:
        t0 = time.perf_counter()
        for start in range(0, jobs, batch):
            noop.enqueue_many([(i,) for i in range(start, min(start + batch, jobs))])
        return jobs / (time.perf_counter() - t0)
    finally:
        app.close()


def migrate_rate(source: str, target: str, jobs: int, batch: int) -> tuple[float, bool]:
    src, dst = open_backend(source), open_backend(target)
    try:
        t0 = time.perf_counter()
        report = migrate(
            src,
            dst,
            Migration(queues=("bench",), batch=batch, wait=timedelta(0)),
            source_name=source,
            target_name=target,
        )
        elapsed = time.perf_counter() - t0
    finally:
        src.close()
        dst.close()
    (q,) = report.queues
    return q.moved / elapsed, report.ok and q.moved == jobs


@contextmanager
def sqs_url(tmp: Path) -> Iterator[Callable[[], str]]:
    from tests.servers.moto import FAKE_AWS_ENV, start_moto

    os.environ.update(FAKE_AWS_ENV)
    server = start_moto(proxied=False)
    try:
        yield lambda: server.url(
            prefix=f"mb{uuid.uuid4().hex[:6]}-", store=f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
        )
    finally:
        server.stop()


@contextmanager
def redis_url(tmp: Path) -> Iterator[Callable[[], str]]:
    from tests.servers.redis import start_redis

    server = start_redis(persistent=False)
    dbs = iter(range(16))
    try:
        yield lambda: f"celery+{server.url}/{next(dbs)}"
    finally:
        server.stop()


@contextmanager
def amqp_url(tmp: Path) -> Iterator[Callable[[], str]]:
    from tests.servers.rabbitmq import start_rabbitmq
    from tests.servers.redis import start_redis

    rabbit, store = start_rabbitmq(), start_redis(persistent=False)
    vhosts = iter(range(16))
    try:  # one queue name per run: a fresh Redis db for the job store, the queue drained
        yield lambda: f"celery+{rabbit.url}?store={store.url}/{next(vhosts)}"
    finally:
        rabbit.stop()
        store.stop()


@contextmanager
def sqlite_url(tmp: Path) -> Iterator[Callable[[], str]]:
    yield lambda: f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"


TARGETS = {"sqlite": sqlite_url, "sqs": sqs_url, "redis": redis_url, "amqp": amqp_url}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--targets", default="sqlite,sqs,redis")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    args = parser.parse_args()
    table = Table(title=f"jobkit migrate: {args.jobs} jobs from sqlite, batch {args.batch}")
    for column in ("target", "enqueue_many jobs/s", "migrate jobs/s", "ratio", "all moved"):
        table.add_column(column, justify="left" if column == "target" else "right")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name in args.targets.split(","):
            enqueues, migrations, oks = [], [], []
            with TARGETS[name](tmp) as fresh:
                for _ in range(args.rounds):  # interleaved, so load drifts hit both alike
                    enqueues.append(enqueue_rate(fresh(), args.jobs, args.batch))
                    source = f"sqlite:///{tmp}/{uuid.uuid4().hex}.db"
                    enqueue_rate(source, args.jobs, args.batch)
                    rate, ok = migrate_rate(source, fresh(), args.jobs, args.batch)
                    migrations.append(rate)
                    oks.append(ok)
            enq, rate = statistics.median(enqueues), statistics.median(migrations)
            table.add_row(name, f"{enq:,.0f}", f"{rate:,.0f}", f"{rate / enq:.2f}", str(all(oks)))
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
