"""The ``stats`` scenario: the numbers `Backend.stats` returns and `jobkit status` /
`jobkit dlq list` print, while a worker holds a job, others wait, some are delayed and some are
dead. Observations are recorded as in `scenarios_contract`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from jobkit import App, JobState, UnsupportedFeature
from jobkit.spi import QueueStats, open_backend
from jobkit_conformance import jobs
from jobkit_conformance.history import F, JobSpec, OpType

from .context import Context
from .observations import observe, observe_second_close, row
from .settings import NotApplicable
from .workers import wait_for

DELAY = 30.0  # seconds the delayed jobs wait: longer than the observations take (15 s was not
# always, on a loaded 2-core machine; a reading taken too late is not judged, see `_observe`)


def _cli(ctx: Context, *argv: str) -> tuple[int, str]:
    """Exit code and what the command printed on stdout (its log on stderr is left out, but
    ends the text when it exits non-zero)."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit.cli.main", "--backend", ctx.suite.url, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return proc.returncode, proc.stdout + (proc.stderr if proc.returncode else "")


def _status_table(text: str, queue: str) -> dict[str, int] | None:
    """The numbers `jobkit status` prints for `queue` (a table row: queue, ready, in flight,
    delayed, dead)."""
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line) if c.strip()]
        if len(cells) >= 5 and cells[0] == queue and all(c.isdigit() for c in cells[1:5]):
            values = [int(c) for c in cells[1:5]]
            return dict(zip(("ready", "in_flight", "delayed", "dead"), values, strict=True))
    return None


def _json(out: str) -> Any:
    try:
        return json.loads(out.strip())
    except ValueError:
        return None


def stats(ctx: Context) -> None:
    if ctx.suite.in_process:
        raise NotApplicable(
            "the CLI runs in a process of its own and cannot see a broker inside this process "
            "(the contract scenario checks the stats of the transport)"
        )
    q = ctx.queue
    backend = ctx.suite.backend
    ctx.start_worker(concurrency=1)
    dead = [
        ctx.enqueue(jobs.reject, [], JobSpec(kind="reject", outcome="dead", permanent=True))
        for _ in range(2)
    ]
    ctx.settle(lambda: set(dead) <= ctx.dead_ids(), "the rejected jobs are dead-lettered")
    opened = ctx.suite.workdir / f"{q}.open"
    hold = ctx.enqueue(jobs.gate, [str(opened), 120.0], JobSpec(kind="gate"))
    try:
        ctx.wait(lambda: ctx.started([hold]), "the gated job started")
        due = time.time() + DELAY
        ready = [ctx.enqueue(jobs.effect, [], JobSpec(kind="effect")) for _ in range(4)]
        delayed = [
            ctx.enqueue(jobs.effect, [], JobSpec(kind="delay"), not_before=due) for _ in range(2)
        ]
        _observe(ctx, backend, dead=dead, ready=ready, delayed=delayed, due=due)
    finally:
        opened.touch()
    big, size = _large_message(ctx)
    ctx.settle(
        lambda: ctx.succeeded([hold, *ready, *delayed, *big]),
        "the held, ready, delayed and large jobs ran",
        timeout=ctx.suite.settings.timeout + DELAY,
    )
    ctx.drained()
    if big:
        observe(
            ctx,
            "backend.message_size",
            ctx.succeeded(big),
            f"a job of {size} bytes on the wire (the declared limit less "
            f"2 KiB, or 200 KiB when unlimited) {'ran' if ctx.succeeded(big) else 'never ran'}",
        )
    _records(ctx, dead=dead, done=ready)
    _check_and_close(ctx)


def _large_message(ctx: Context) -> tuple[list[str], int]:
    """Enqueue one job just under the declared message size (200 KiB when unlimited), and one
    just over it, which must be refused with UnsupportedFeature."""
    limit = ctx.suite.backend.capabilities.max_message_bytes
    size = (limit - 2048) if limit is not None else 200 * 1024
    job = ctx.enqueue(jobs.effect, ["x" * size], JobSpec(kind="large"))
    if not ctx.history.select(f=F.ENQUEUE, type=OpType.OK, job_id=job):
        failed = ctx.history.select(f=F.ENQUEUE, job_id=job)[-1]
        observe(
            ctx,
            "backend.message_size",
            False,
            f"a job of {size} bytes (under the declared limit {limit}) was refused: "
            f"{failed.value.get('message')}",
        )
        return [], size
    if limit is not None:
        over = ctx.enqueue(
            jobs.effect,
            ["x" * (limit + 1)],
            JobSpec(kind="refused", outcome="skip", feature="size"),
        )
        refused = ctx.history.select(f=F.ENQUEUE, type=OpType.FAIL, job_id=over)
        error = refused[0].value.get("error") if refused else "no error"
        observe(
            ctx,
            "backend.message_size",
            error == "UnsupportedFeature",
            f"a job over the declared {limit} bytes: enqueue raised {error}",
        )
    return [job], size


def _records(ctx: Context, *, dead: list[str], done: list[str]) -> None:
    backend = ctx.suite.backend
    if not backend.capabilities.results:
        try:
            backend.job_record(done[0])
        except UnsupportedFeature:
            observe(ctx, "backend.job_record", True, "results not claimed: job_record refused")
        else:
            observe(
                ctx,
                "backend.job_record",
                False,
                "results not claimed, but job_record did not raise UnsupportedFeature",
            )
        return
    expected = [(done[0], JobState.SUCCEEDED), (dead[0], JobState.DEAD)]
    for job_id, state in expected:

        def settled(job_id: str = job_id, state: JobState = state) -> bool:
            record = backend.job_record(job_id)
            return record is not None and record.state is state

        ctx.try_wait(settled, timeout=5)
        record = backend.job_record(job_id)
        seen = (
            "no record" if record is None else f"{record.state} after {record.attempts} attempt(s)"
        )
        observe(
            ctx,
            "backend.job_record",
            record is not None and record.state is state and record.attempts == 1,
            f"job_record of a job that ran once and ended {state}: {seen}",
        )
    unknown = backend.job_record(ctx.new_id())
    observe(
        ctx,
        "backend.job_record",
        unknown is None or unknown.state is JobState.UNKNOWN,
        f"job_record of an id never enqueued: {unknown}",
    )


def _check_and_close(ctx: Context) -> None:
    backend = ctx.suite.backend
    # an app of one time-limited job on this scenario's queue: `check` looks at the app's
    # queues, and must not touch any queue outside the run's namespace
    app = App("jobkit-conformance-check", backend=backend)

    @app.job(name="conformance.check_limited", queue=ctx.queue, time_limit=timedelta(seconds=1))
    def limited() -> None:
        """Never run: only checked."""

    with ctx.suite.lock:
        problems = backend.check(app)
    caps = backend.capabilities
    unfounded = [p for p in problems if "time limit" in p and caps.time_limits]
    observe(
        ctx,
        "backend.check",
        isinstance(problems, list) and not unfounded,
        f"check(app) with a time-limited job on a backend claiming time limits: {problems}",
    )
    other = open_backend(ctx.suite.url)
    try:
        other.stats([ctx.queue])
    finally:
        other.close()
    observe_second_close(ctx, "backend.close", other)


def _observe(
    ctx: Context,
    backend: Any,
    *,
    dead: list[str],
    ready: list[str],
    delayed: list[str],
    due: float,
) -> None:
    """Read the stats before and after the CLI reads them, and judge both. A reading that
    started once the delayed jobs may be due (`due` less the declared scheduling precision)
    is not judged on the delayed and waiting counts: they may have become ready then."""
    q = ctx.queue
    previous: list[QueueStats | None] = [None]
    in_time = due - backend.capabilities.scheduling_precision.total_seconds()
    late: set[str] = set()

    def read(label: str = "") -> QueueStats | None:
        if label and time.time() >= in_time:
            late.add(label)
            ctx.notes.append(
                f"stats: the reading {label} the CLI started {time.time() - due:+.1f} s from "
                "the delayed jobs' due time; its delayed and waiting counts are not judged"
            )
        with ctx.suite.lock:
            return row(backend.stats([q]), q)

    def steady() -> bool:  # two readings 0.3 s apart agree: the worker took what it takes
        now = read()
        same = now is not None and now == previous[0]
        previous[0] = now
        return same

    wait_for(steady, timeout=5, interval=0.3)
    before = read("before")
    status = {"status_json": ("status", "-q", q, "--json"), "status": ("status", "-q", q)}
    with ThreadPoolExecutor(max_workers=len(status)) as pool:
        outs = dict(zip(status, pool.map(lambda a: _cli(ctx, *a), status.values()), strict=True))
    after = read("after")
    # one at a time: a broker that cannot peek (SQS) hides what one listing is reading from
    # another running at the same moment
    outs["dlq_json"] = _cli(ctx, "dlq", "list", q, "--json")
    outs["dlq"] = _cli(ctx, "dlq", "list", q)
    outs["dlq_one"] = _cli(ctx, "dlq", "list", q, "--limit", "1", "--json")
    running = len(ctx.running())
    waiting = len(ready) + running
    visible = backend.capabilities.in_flight_visible
    for label, s in (("before", before), ("after", after)):
        if s is None:
            observe(ctx, "stats.counts", False, f"stats({q!r}) has no row for the queue")
            continue
        observe(
            ctx,
            "stats.counts",
            s.dead == len(dead),
            f"{len(dead)} dead letters: stats ({label} the CLI) said dead={s.dead}",
        )
        if label not in late:
            observe(  # where a worker may hold delayed messages unacked, they show nowhere
                ctx,
                "stats.counts",
                s.delayed == len(delayed) if visible else s.delayed <= len(delayed),
                f"{len(delayed)} jobs due in {DELAY:g} s: stats said delayed={s.delayed}"
                + ("" if visible else " (in-flight counts not claimed: at most that many)"),
            )
            if visible:
                observe(
                    ctx,
                    "stats.counts",
                    s.ready + s.in_flight == waiting,
                    f"{len(ready)} ready behind {running} running job(s): stats said "
                    f"ready={s.ready} + in_flight={s.in_flight}, {waiting} expected in all",
                )
            else:  # what the workers hold is counted nowhere: never as ready
                observe(
                    ctx,
                    "stats.counts",
                    s.ready <= len(ready),
                    f"{len(ready)} ready behind {running} running job(s), in-flight counts not "
                    f"claimed: stats said ready={s.ready}, at most {len(ready)} expected",
                )
        observe(
            ctx,
            "stats.in_flight",
            s.in_flight >= running > 0,
            f"{running} job(s) running: stats said in_flight={s.in_flight}",
        )
    readings = [asdict(s) for s in (before, after) if s is not None]
    code, out = outs["status_json"]
    printed = _json(out)
    if isinstance(printed, list) and printed and isinstance(printed[0], dict):
        numbers = {k: v for k, v in printed[0].items() if k != "queue"}
        match = any(all(r.get(k) == v for k, v in numbers.items()) for r in readings)
        observe(
            ctx,
            "cli.status",
            match and {"ready", "in_flight", "delayed", "dead"} <= numbers.keys(),
            f"`jobkit status --json` printed {numbers}; Backend.stats read {readings}",
        )
    else:
        observe(ctx, "cli.status", False, f"`jobkit status --json` exited {code}: {out[-300:]}")
    code, out = outs["status"]
    table = _status_table(out, q)
    match = table is not None and any(all(r[k] == v for k, v in table.items()) for r in readings)
    observe(
        ctx,
        "cli.status",
        match,
        f"`jobkit status` printed {table if table else 'no row: ' + out[-300:]}; "
        f"Backend.stats read {readings}",
    )
    code, out = outs["dlq_json"]
    rows = _json(out)
    if isinstance(rows, list):
        ids = sorted(str(r.get("id")) for r in rows)
        reasons = [r.get("reason") for r in rows]
        observe(
            ctx,
            "cli.dlq_list",
            ids == sorted(dead) and all(reasons),
            f"{len(dead)} dead letters: `jobkit dlq list --json` listed {ids} with reasons "
            f"{reasons}",
        )
        deliveries = [r.get("deliveries") for r in rows]
        observe(
            ctx,
            "cli.dlq_list",
            all(isinstance(d, int) and d >= 1 for d in deliveries),
            f"`jobkit dlq list --json` printed deliveries {deliveries} for jobs run once",
        )
    else:
        observe(ctx, "cli.dlq_list", False, f"`jobkit dlq list --json` exited {code}: {out[-300:]}")
    code, out = outs["dlq"]
    title = re.search(r"dead letters of \S+: (\d+)", out)
    count = int(title.group(1)) if title else None
    shown = [i for i in dead if i in out]
    observe(
        ctx,
        "cli.dlq_list",
        count == len(dead) == len(shown),
        f"`jobkit dlq list` printed the count {count if title else 'nowhere'} and "
        f"{len(shown)} of the {len(dead)} ids",
    )
    code, out = outs["dlq_one"]
    one = _json(out)
    observe(
        ctx,
        "dead_letters.limit",
        isinstance(one, list) and len(one) == 1,
        f"`jobkit dlq list --limit 1` with {len(dead)} dead letters listed "
        f"{len(one) if isinstance(one, list) else out[-300:]}",
    )
