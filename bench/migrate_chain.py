"""The issue-11 check of `jobkit migrate`, as a user would try it: N jobs (ready, delayed up to an
hour, some with attempts used, some dead) migrated sqlite -> celery+redis -> sqs -> celery+amqp
-> sqlite with the `jobkit migrate` command, the migrator SIGKILLed at random points several
times on every leg and run again; then every job is checked by id at the end.

    .venv/bin/python bench/migrate_chain.py [--jobs 10000] [--kills 2] [--seed 1]

Starts its own redis-server, rabbitmq-server and moto server on 127.0.0.1 (tests/servers) and
stops them by PID. Exit 0 when every job is present exactly once at the end with its state,
every delay is preserved within the slack, and each leg's last reconciliation is exact.

SQS counts every receive; jobkit takes a killed export's receives out again, except when the
kill fell between a receive and its record in the job store: such a ready job comes out with
one attempt more (never fewer). The check allows that for at most one batch per kill on the
leg out of SQS, and prints how many it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from jobkit.spi import Backend, TransportBackend, open_backend  # noqa: E402
from tests.migration import QUEUE, Seeded, check_migrated, seed, snapshot_sqlite  # noqa: E402

SLACK = timedelta(seconds=5)  # SQS rounds delays up to whole seconds; its timers add up to 1 s


@dataclass
class Leg:
    source: str
    target: str
    name: str
    kills: int = 0
    seconds: float = 0.0
    report: dict[str, Any] = field(default_factory=dict)


def depth(backend: Backend) -> int:
    """Jobs of the queue at `backend` (ready, in flight, delayed, dead)."""
    (s,) = backend.stats([QUEUE])
    return s.ready + s.in_flight + s.delayed + s.dead


def run_leg(
    leg: Leg, jobs: int, kills: int, rng: random.Random, batch: int, log: Path, poll: float
) -> None:
    """`jobkit migrate` source -> target, SIGKILLed `kills` times once a random share of the
    jobs has reached the target (looked at every `poll` seconds: each look costs the target a
    stats call), then run to the end; its last JSON report kept."""
    argv = [sys.executable, "-m", "jobkit.cli.main", "migrate", "--from", leg.source,
            "--to", leg.target, "--queue", QUEUE, "--include-dead", "--batch", str(batch),
            "--lease", "10", "--wait", "30"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    target = open_backend(leg.target)  # watched, once a second, for when to kill
    for _ in range(kills):
        start = depth(target)
        left = max(0, jobs - start)
        goal = start + int(left * rng.uniform(0.05, 0.4))
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                                    stdout=out, stderr=out)  # fmt: skip
            deadline = time.monotonic() + 600
            while proc.poll() is None and depth(target) < goal:
                if time.monotonic() > deadline:
                    break
                time.sleep(poll)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                leg.kills += 1
            proc.wait()
    target.close()
    report = log.with_suffix(f".{leg.name}.json")
    with log.open("ab") as out:
        done = subprocess.run([*argv, "--json", str(report)], cwd=ROOT, env=env,
                              stdout=out, stderr=out, timeout=3600)  # fmt: skip
    leg.seconds = time.monotonic() - t0
    leg.report = json.loads(report.read_text()) if report.exists() else {}
    leg.report["exit"] = done.returncode


def chain(
    jobs: int, kills: int, seed_value: int, workdir: Path, batch: int = 200, poll: float = 0.5
) -> list[str]:
    """Run the whole chain; returns the problems found (empty: the check passed)."""
    from tests.servers.moto import FAKE_AWS_ENV, start_moto
    from tests.servers.rabbitmq import start_rabbitmq
    from tests.servers.redis import start_redis

    rng = random.Random(seed_value)
    os.environ.update(FAKE_AWS_ENV)
    with ExitStack() as stack:
        redis_server = start_redis(persistent=False)
        stack.callback(redis_server.stop)
        rabbit = start_rabbitmq()
        stack.callback(rabbit.stop)
        moto = start_moto(proxied=False)
        stack.callback(moto.stop)
        redis_db = redis_server.url
        first, last = workdir / "first.db", workdir / "last.db"
        urls = [
            f"sqlite:///{first}",
            f"celery+{redis_db}/0",
            moto.url(prefix=f"ch{uuid.uuid4().hex[:6]}-", store=f"sqlite:///{workdir}/sqs.db"),
            f"celery+{rabbit.url}?store={redis_db}/1",
            f"sqlite:///{last}",
        ]
        names = ["sqlite", "celery+redis", "sqs", "celery+amqp", "sqlite"]
        source = open_backend(urls[0])
        assert isinstance(source, TransportBackend)
        try:
            n_dead, n_retried = jobs // 20, jobs // 10
            n_delayed = jobs // 4
            seeded = seed(
                source,
                ready=jobs - n_dead - n_retried - n_delayed,
                delayed=n_delayed,
                retried=n_retried,
                dead=n_dead,
                priorities=False,  # SQS has none: migrate would leave such jobs at the source
            )
        finally:
            source.close()
        legs = [
            Leg(urls[i], urls[i + 1], f"{names[i]}->{names[i + 1]}") for i in range(len(urls) - 1)
        ]
        log = workdir / "migrate.log"
        for leg in legs:
            run_leg(leg, jobs, kills, rng, batch, log, poll)
            print(
                f"{leg.name}: {leg.seconds:.1f} s, {leg.kills} kill(s), exit {leg.report['exit']}"
            )
        return problems(seeded, legs, last, jobs, batch)


def problems(seeded: Seeded, legs: list[Leg], last: Path, jobs: int, batch: int) -> list[str]:
    out = []
    for leg in legs:
        if leg.report.get("exit") != 0 or not leg.report.get("ok"):
            out.append(f"{leg.name}: exit {leg.report.get('exit')}, report {leg.report}")
            continue
        (q,) = leg.report["queues"]
        exact = (
            q["found_at_source"] == q["found_at_target"] == q["copied"] + q["skipped_present"]
            and q["left"] == 0
            and q["remaining_at_source"] == 0
        )
        if not exact:
            out.append(f"{leg.name}: reconciliation not exact: {q}")
    found = snapshot_sqlite(str(last))
    inflated = _sqs_receive_inflation(found, seeded)
    allowed = batch * sum(leg.kills for leg in legs if leg.name.startswith("sqs->"))
    if len(inflated) > allowed:
        out.append(f"{len(inflated)} jobs with an extra attempt, more than {allowed}")
    for job_id in inflated:  # compare them as SQS left them: one receive more
        (job,) = found[job_id]
        found[job_id] = [type(job)(body=job.body, attempts=0, due_in=job.due_in, reason=None)]
    try:
        check_migrated(found, seeded, slack=SLACK)
    except AssertionError as exc:
        out.append(f"final check: {exc}")
    print(f"{len(found)} of {jobs} jobs at the end; {len(inflated)} with an SQS receive counted")
    return out


def _sqs_receive_inflation(found: dict[str, list[Any]], seeded: Seeded) -> list[str]:
    ready = set(seeded.ready)
    return [
        i for i, rows in found.items() if i in ready and len(rows) == 1 and rows[0].attempts == 1
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=2, help="SIGKILLs per leg")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--keep-log", help="copy the migrators' output here")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between looks")
    args = parser.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = chain(args.jobs, args.kills, args.seed, Path(tmp), args.batch, args.poll)
        finally:
            log = Path(tmp) / "migrate.log"
            if args.keep_log and log.exists():
                Path(args.keep_log).write_bytes(log.read_bytes())
    print(f"total {time.monotonic() - t0:.0f} s")
    for problem in found:
        print("PROBLEM:", problem)
    print("OK" if not found else f"{len(found)} problem(s)")
    return 0 if not found else 1


if __name__ == "__main__":
    sys.exit(main())
