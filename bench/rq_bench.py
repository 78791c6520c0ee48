"""Benchmark jobkit-on-RQ against plain RQ: same redis-server, same worker class, same no-op job.

Both sides run one RQ worker process of the same class (forking ``Worker`` or ``SimpleWorker``)
with JSON serialization and log level WARNING: plain RQ through ``rq worker`` (RQ's defaults, no
scheduler), jobkit through ``jobkit worker -c 1`` (its supervisor runs the maintenance: due-job
mover, StartedJobRegistry cleaning). Per block: enqueue N jobs one call at a time with no worker
running (``queue.enqueue("rq_plain_jobs.plain_noop", i, n)`` vs ``noop.enqueue(i, n)``), then
start the worker and time the drain from marks the job writes (jobs ``i < 4`` and
``i >= n - 8`` RPUSH ``time.time()`` to a list in another db). Then, into the emptied db, N
jobs with the batch call, 500 (``_local.BATCH``) per call: jobkit's
``noop.enqueue_many([(i, n), ...])`` against RQ's own batch path,
``queue.enqueue_many([Queue.prepare_data("rq_plain_jobs.plain_noop", (i, n)), ...])``, given no
``pipeline`` (RQ then builds one MULTI/EXEC pipeline per call and executes it; a caller's
pipeline would only let it add commands of its own). Then the enqueue-to-start latency, p50 and
p99: a worker started as the drain's, warm (its first job has run), and 200 jobs (20 when
quick) sent one call at a time at 50/s (``_local.paced``), each carrying ``sent =
time.time()``; the job appends ``started - sent`` to the file named by ``JOBKIT_BENCH_STAMPS``
(jobkit's ``stamp`` and plain RQ's ``rq_plain_jobs.plain_stamp`` are one function, in the
small module RQ's forking work-horse imports for every job). What happens between the two ends
is part of the figure: RQ's blocking dequeue (BLMOVE) and, for the forking class, a fork per
job. Each round runs all of that for one system, then for the other; rounds alternate which
goes first, and each figure is the median of the rounds.

The Redis commands of each drain are counted with ``INFO commandstats`` (reset before, read after)
and printed per job, by command: that says where they go. Each drain also reads the worker's CPU
time (its processes and the work-horses they reaped, from /proc) from the first job's mark to
the end, per job, a second view of what jobkit costs beside the rate (on the shared VM both
move with the neighbours' load: the same code read 3.29 and 4.29 ms per job for plain RQ an
hour apart).

    .venv/bin/python bench/rq_bench.py [--jobs 2000] [--rounds 3] [--latency-jobs 200]
        [--worker fork|simple|both]

Measured 2026-12-02 on the quiet 2-core machine (load average 0.4), ``--jobs 2000 --rounds 2``,
medians of 2 alternated rounds:

* forking ``Worker``: enqueue jobkit 2,754/s vs RQ 2,397/s, **1.15**; drain 77.7 vs 85.8/s,
  **0.91**.
* ``SimpleWorker``: enqueue 3,033 vs 2,318/s, **1.31**; drain 246.9 vs 273.6/s, **0.90**.

Enqueue is faster than RQ's own: one unique-id Lua call (``EVALSHA``) per job where RQ's
``enqueue`` runs a MULTI/EXEC pipeline; jobkit's validation (arguments, envelope, the JSON
round trip) costs less than that difference. (An earlier run under a load average of 30 gave
0.45-0.54: RQ's own enqueue varied 2x between repetitions there; that figure was noise.)
Until 2026-12-03 the drain missed the 0.95 target: each job cost jobkit two Lua calls of its
own, each a round trip (the start count with the idempotency check; the outcome record).

Since 2026-12-03 both ride in the MULTI/EXEC transactions RQ's worker runs anyway (the one that
files the job started, the one that files it finished), and the worker waits out a Redis outage
in them instead of quitting (a first version without that was reverted the same morning: the
conformance suite's outage scenario caught a `SimpleWorker` that exited). jobkit's RQ workers
also send RQ's worker heartbeat (HSET, EXPIRE, EXPIRE: three round trips when RQ sends it
alone, twice per job) as one pipeline, and do not write IDLE a second time before the next
dequeue. Round trips per job, counted at the socket (``SimpleWorker``, in one process): jobkit
13.3, plain RQ 20.4. Measured on the 2-core AMD EPYC VM, noisy (plain RQ's own drain moved
between 175 and 305 jobs/s over the day):

* ``bench/run.py --only rq`` at 12:08 and 12:26 UTC: ``SimpleWorker`` drain **1.06** and
  **1.01** (worker CPU per job 4.47 vs 4.79 ms, 3.63 vs 3.65 ms), enqueue 1.13 and 1.18;
  forking ``Worker`` drain **0.94** and **0.91**, enqueue 1.44 and 1.20. A 4-round run
  alternating with plain RQ (forking, 1,000 jobs) the same hour: **1.08**. At 13:07, with
  the prctl change below: ``SimpleWorker`` drain **1.23**, enqueue 1.05; forking drain
  **0.98**, enqueue 1.26.
* The forking worker's remaining cost is in its work-horses: a jobkit horse takes about 1,890
  minor page faults against RQ's 1,670 and 1.5-2 ms more system time (counted from the
  worker's reaped children over 300 jobs): copy-on-write of the memory jobkit's code touches
  in each fresh fork. (Looking libc's prctl up once per worker instead of in each horse took
  30 of those faults away; `gc.freeze()` before forking took none.)
* 2026-12-04: each work-horse opens a Redis connection of its own (redis-py's pool starts
  afresh in a forked process), and redis-py 7.2 and later read their own version from the
  installed packages' metadata (`importlib.metadata`) for every connection they make: in a
  forked child, the first command cost 2.5-2.8 ms of CPU and about 800 page faults that way,
  1.4 ms and 460 faults without the lookup. jobkit's client reads the version once
  (`jobkit_rq._client`); plain RQ still pays it. A jobkit horse now takes 1,190 faults from
  start to exit against RQ's 1,330; ``--worker fork --rounds 4 --jobs 1000``: drain **1.13**
  (117.9 vs 104.5 jobs/s, worker CPU per job 8.11 vs 9.16 ms), enqueue 1.24; the same run
  the hour before the change: drain 0.94 (101.1 vs 107.2/s, 9.49 vs 8.93 ms).

Where the Redis commands per job go during a drain (``INFO commandstats``, ``SimpleWorker``):
plain RQ 57.1 per job (EXPIRE 17, HSET 14, MULTI/EXEC 4+4, ZADD 3, ZREM 2, BLMOVE, LREM, ...:
RQ's execution records, registries and results), jobkit 65.2: RQ's same commands (one HSET
fewer: the second IDLE) plus jobkit's start count (an EVAL in RQ's start transaction: the
idempotency check and the attempt counter), its success record (RPUSH, PEXPIRE and the done
key's SET in RQ's finish transaction), and its supervisor's maintenance (per queue and second:
one EVALSHA moving due jobs, the lock's SET NX and DEL, RQ's StartedJobRegistry and
intermediate-queue reads, the export-lease read), amortised over the jobs. LLEN in both
columns is this script's own progress polling.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _local import BATCH, warm_latency_ms  # noqa: E402
from _rows import Measurement  # noqa: E402
from rq_plain_jobs import MARKS_ENV, STAMPS_ENV, mark, plain_stamp  # noqa: E402

from jobkit import App  # noqa: E402

if TYPE_CHECKING:
    from rq import Queue

QUEUE = "bench"
PLAIN_QUEUE = "bench-plain"
JSON = "rq.serializers.JSONSerializer"
PLAIN_STAMP = "rq_plain_jobs.plain_stamp"
LATENCY_JOBS = 200
"""Latency jobs per round (after the warm-up job); 20 in a quick run."""

app = App("rq-bench")


@app.job(name="noop", queue=QUEUE)
def noop(i: int, n: int) -> None:
    mark(i, n)


stamp = app.job(name="stamp", queue=QUEUE)(plain_stamp)


def _plain_queue(redis_url: str) -> Queue:
    """Plain RQ's queue, JSON-serialized as its worker is (``--serializer``)."""
    import redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    return Queue(PLAIN_QUEUE, connection=redis.Redis.from_url(redis_url), serializer=JSONSerializer)


def _flush(redis_url: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()


def _marks_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/15"


def _enqueue(system: str, redis_url: str, url: str, n: int) -> float:
    """Enqueue n jobs one call at a time; jobs per second."""
    if system == "rq":
        queue = _plain_queue(redis_url)
        start = time.perf_counter()
        for i in range(n):
            queue.enqueue("rq_plain_jobs.plain_noop", i, n)
        took = time.perf_counter() - start
        queue.connection.close()
        return n / took
    app.use(url)
    start = time.perf_counter()
    for i in range(n):
        noop.enqueue(i, n)
    took = time.perf_counter() - start
    app.close()
    return n / took


def _enqueue_many(system: str, redis_url: str, url: str, n: int) -> float:
    """Enqueue n jobs with the batch call, `_local.BATCH` (500) per call, into an empty db with
    no worker running, timed from the first call as `_enqueue` is; jobs per second.

    jobkit: ``noop.enqueue_many([(i, n), ...])``. Plain RQ: its documented batch path,
    ``queue.enqueue_many([Queue.prepare_data("rq_plain_jobs.plain_noop", (i, n)), ...])``
    without a ``pipeline`` argument: RQ then makes the pipeline itself (a MULTI/EXEC
    transaction) and executes it, one round trip per batch; passing one would only let the
    caller add commands of its own to it. Raises RuntimeError unless the queue holds n jobs."""
    batches = [range(start, min(start + BATCH, n)) for start in range(0, n, BATCH)]
    if system == "rq":
        from rq import Queue

        queue = _plain_queue(redis_url)
        start = time.perf_counter()
        for batch in batches:
            queue.enqueue_many(
                [Queue.prepare_data("rq_plain_jobs.plain_noop", (i, n)) for i in batch]
            )
        took = time.perf_counter() - start
        queued = queue.count
        queue.connection.close()
    else:
        import redis

        app.use(url)
        start = time.perf_counter()
        for batch in batches:
            noop.enqueue_many([(i, n) for i in batch])
        took = time.perf_counter() - start
        app.close()
        client = redis.Redis.from_url(redis_url)
        queued = client.llen(f"rq:queue:{QUEUE}")
        client.close()
    if queued != n:
        raise RuntimeError(f"{system}: enqueue_many left {queued} of {n} jobs in the queue")
    return n / took


def _latency(
    system: str, redis_url: str, url: str, worker: str, count: int, stamps: Path
) -> tuple[float, float]:
    """Enqueue-to-start latency on a lightly loaded queue, (p50, p99) in ms: the worker started
    as the drain's (`_worker`), warm (its first stamp job has run; that stamp is discarded),
    then `count` stamp jobs sent one call at a time at ``_local.LATENCY_RATE`` (50/s), each
    carrying ``sent = time.time()``; the job appends ``started - sent`` to `stamps`. jobkit's
    ``stamp.enqueue(sent)`` against plain RQ's ``queue.enqueue("rq_plain_jobs.plain_stamp", sent)``
    (JSON, as for the drain): the same function. What the worker does between the two ends is
    measured too: RQ's blocking dequeue (BLMOVE) and, for the forking class, the fork of a
    work-horse per job."""
    _flush(redis_url)
    if system == "rq":
        queue = _plain_queue(redis_url)

        def send(sent: float) -> None:
            queue.enqueue(PLAIN_STAMP, sent)

        close = queue.connection.close
    else:
        app.use(url)

        def send(sent: float) -> None:
            stamp.enqueue(sent)

        close = app.close
    send(time.time())  # the warm-up job
    proc = _worker(system, redis_url, url, worker, _marks_url(redis_url), stamps=stamps)
    try:
        return warm_latency_ms(stamps, send, count)
    finally:
        _stop(proc)
        close()


def _worker(
    system: str,
    redis_url: str,
    url: str,
    worker: str,
    marks: str,
    *,
    stamps: Path | None = None,
) -> subprocess.Popen[bytes]:
    """One worker process of class `worker` on `system`'s queue; `stamps`, the latency file."""
    extra = {MARKS_ENV: marks} | ({STAMPS_ENV: str(stamps)} if stamps else {})
    env = dict(os.environ, PYTHONPATH=f"{HERE}{os.pathsep}{ROOT}", **extra)
    if system == "rq":
        cls = "rq.worker.SimpleWorker" if worker == "simple" else "rq.worker.Worker"
        argv = [str(Path(sys.executable).with_name("rq")), "worker", "--url", redis_url, "-q",
                "-w", cls, "--serializer", JSON, PLAIN_QUEUE]  # fmt: skip
    else:
        argv = [sys.executable, "-m", "jobkit.cli.main", "--app", "rq_bench:app", "--backend",
                url, "worker", "-q", QUEUE, "-c", "1"]  # fmt: skip
    return subprocess.Popen(argv, env=env, cwd=HERE, start_new_session=True,
                            stdout=subprocess.DEVNULL)  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _commands(client: object) -> Counter[str]:
    stats = client.info("commandstats")  # type: ignore[attr-defined]
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid`, its live descendants, and the children each
    of them has reaped (an RQ worker's work-horses), from /proc; 0 where /proc is missing."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = sum(int(x) for x in fields[11:15]) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(parents.get(current, []))
    return total


def _drain(
    system: str, redis_url: str, url: str, worker: str, n: int
) -> tuple[float, float | None, Counter[str]]:
    """Start a worker on the filled queue; (jobs per second, the worker's CPU ms per job, Redis
    commands during the drain). The CPU is counted from the first jobs' marks to the end, over
    the jobs left then."""
    import redis

    marks_url = _marks_url(redis_url)
    marks = redis.Redis.from_url(marks_url)
    marks.delete("marks")
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    proc = _worker(system, redis_url, url, worker, marks_url)
    queue_key = f"rq:queue:{PLAIN_QUEUE if system == 'rq' else QUEUE}"
    cpu_from: tuple[float, int] | None = None  # (CPU s, jobs left) once the first job ran
    try:
        # wait for the last marks; give up only when the queue stops shrinking for 60 s
        left, moved_at = client.llen(queue_key), time.monotonic()
        while marks.llen("marks") < min(n, 12) and time.monotonic() - moved_at < 60:
            if cpu_from is None and marks.llen("marks"):
                cpu_from = (_cpu_seconds(proc.pid), client.llen(queue_key))
            time.sleep(0.02 if cpu_from is None else 0.2)
            now_left = client.llen(queue_key)
            if now_left != left:
                left, moved_at = now_left, time.monotonic()
        cpu_ms = None
        if cpu_from is not None and cpu_from[1] > 0:
            cpu_ms = 1000 * (_cpu_seconds(proc.pid) - cpu_from[0]) / cpu_from[1]
        commands = _commands(client)
    finally:
        _stop(proc)
    times = sorted(float(t) for t in marks.lrange("marks", 0, -1))
    marks.close()
    client.close()
    if len(times) < min(n, 12):
        raise RuntimeError(f"{system}: only {len(times)} marks; the drain did not finish")
    return (n - 1) / (times[-1] - times[0]), cpu_ms, commands


def run(worker: str, n: int, rounds: int, latency_jobs: int = LATENCY_JOBS) -> list[Measurement]:
    """`rounds` rounds alternating which system goes first; in each, per system: enqueue n jobs
    one call at a time, drain them (`_drain`), enqueue n with the batch call
    (`_enqueue_many`), then the latency of `latency_jobs` jobs (`_latency`). Medians of the
    rounds."""
    from tests.servers.redis import start_redis

    server = start_redis(persistent=False)
    redis_url = f"{server.url}/0"
    url = f"rq+{redis_url}?worker={worker}"
    figures = ("enqueue", "enqueue_many", "drain", "p50", "p99")
    rates: dict[str, dict[str, list[float]]] = {
        s: {f: [] for f in figures} for s in ("jobkit", "rq")
    }
    commands: dict[str, Counter[str]] = {"jobkit": Counter(), "rq": Counter()}
    cpu: dict[str, list[float]] = {"jobkit": [], "rq": []}
    try:
        with tempfile.TemporaryDirectory(prefix="jobkit-bench-rq-") as tmp:
            for r in range(rounds):
                order = ("jobkit", "rq") if r % 2 == 0 else ("rq", "jobkit")
                for system in order:
                    _flush(redis_url)
                    rates[system]["enqueue"].append(_enqueue(system, redis_url, url, n))
                    drain, cpu_ms, used = _drain(system, redis_url, url, worker, n)
                    rates[system]["drain"].append(drain)
                    if cpu_ms is not None:
                        cpu[system].append(cpu_ms)
                    commands[system] += used
                    _flush(redis_url)
                    many = _enqueue_many(system, redis_url, url, n)
                    rates[system]["enqueue_many"].append(many)
                    stamps = Path(tmp) / f"stamps-{system}-{r}.txt"
                    p50, p99 = _latency(system, redis_url, url, worker, latency_jobs, stamps)
                    rates[system]["p50"].append(p50)
                    rates[system]["p99"].append(p99)
    finally:
        server.stop()
    out = []
    for system in ("jobkit", "rq"):
        per_job = {k: v / (n * rounds) for k, v in commands[system].most_common()}
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(per_job.items())[:12])
        median = {f: statistics.median(rates[system][f]) for f in figures}
        batch = "noop.enqueue_many" if system == "jobkit" else "Queue.enqueue_many of prepare_data"
        out.append(
            Measurement(
                backend=f"rq+redis ({worker})",  # one ratio per worker class
                system=system,
                jobs=n,
                enqueue_per_s=median["enqueue"],
                enqueue_many_per_s=median["enqueue_many"],
                drain_per_s=median["drain"],
                latency_p50_ms=median["p50"],
                latency_p99_ms=median["p99"],
                notes=f"worker={worker}, 1 process; worker CPU per job {_median_ms(cpu[system])}; "
                f"Redis commands per job during the drain: {sum(per_job.values()):.1f} ({top}); "
                f"enqueue_many: {batch}, 500 per call; latency: {latency_jobs} jobs at 50/s to "
                "the running worker",
            )
        )
    return out


def _median_ms(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ms" if values else "not measured"


def measure(*, quick: bool) -> list[Measurement]:
    """Both worker classes, 2,000 jobs (enqueue, enqueue_many, drain) and 200 latency jobs:
    medians of 3 rounds (forking) and 5 (``SimpleWorker``, whose drain varies most between
    rounds on a shared VM); `quick`: 200 jobs, 20 latency jobs, one round."""
    if quick:
        return run("fork", 200, 1, 20) + run("simple", 200, 1, 20)
    return run("fork", 2000, 3) + run("simple", 2000, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-jobs", type=int, default=LATENCY_JOBS)
    parser.add_argument("--worker", choices=("fork", "simple", "both"), default="both")
    args = parser.parse_args()
    for worker in ("fork", "simple") if args.worker == "both" else (args.worker,):
        jobkit, plain = run(worker, args.jobs, args.rounds, args.latency_jobs)
        for m in (jobkit, plain):
            print(f"{worker:6} {m.system:6} enqueue {m.enqueue_per_s:8.0f}/s  "
                  f"enqueue_many {m.enqueue_many_per_s:8.0f}/s  drain {m.drain_per_s:7.1f}/s  "
                  f"latency p50 {m.latency_p50_ms:6.2f} ms  p99 {m.latency_p99_ms:6.2f} ms  "
                  f"{m.notes}")  # fmt: skip
        assert jobkit.enqueue_per_s and plain.enqueue_per_s and jobkit.drain_per_s
        assert plain.drain_per_s and jobkit.enqueue_many_per_s and plain.enqueue_many_per_s
        assert jobkit.latency_p50_ms and plain.latency_p50_ms
        assert jobkit.latency_p99_ms and plain.latency_p99_ms
        enqueue = jobkit.enqueue_per_s / plain.enqueue_per_s
        many = jobkit.enqueue_many_per_s / plain.enqueue_many_per_s
        drain = jobkit.drain_per_s / plain.drain_per_s
        p50 = jobkit.latency_p50_ms / plain.latency_p50_ms
        p99 = jobkit.latency_p99_ms / plain.latency_p99_ms
        cpu = [re.search(r"CPU per job ([0-9.]+) ms", m.notes) for m in (jobkit, plain)]
        ours, theirs = cpu
        cost = (
            f"  worker CPU per job {float(ours[1]) / float(theirs[1]):.2f}"
            if ours is not None and theirs is not None
            else ""
        )
        print(
            f"{worker:6} ratio jobkit/rq: enqueue {enqueue:.2f}  enqueue_many {many:.2f}  "
            f"drain {drain:.2f}{cost}  latency (>1 slower) p50 {p50:.2f}  p99 {p99:.2f}"
        )


if __name__ == "__main__":
    main()
