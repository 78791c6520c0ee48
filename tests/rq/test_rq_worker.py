"""The RQ backend with a real redis-server and real `jobkit worker` processes (RQ workers of
both classes): jobs are real RQ jobs that RQ's own tools see, and RQ's quiet failures are gone."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from jobkit_rq.probe import probe_from_url

import jobkit
from jobkit import spi
from tests.apps import ledger as L
from tests.rq.conftest import QUEUE, runs
from tests.waiting import wait_until
from tests.workers import kill_group, start_worker

pytestmark = pytest.mark.slow


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        kill_group(proc)
        proc.wait(timeout=30)


def spawn(procs: list[subprocess.Popen[bytes]], url: str, ledger: Path, *args: str) -> None:
    procs.append(start_worker(url, ledger, "-q", QUEUE, "-c", "1", *args))


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url.removeprefix("rq+").split("?")[0])


def test_a_job_is_a_real_rq_job_named_after_the_job_with_json_data(backend, app):
    handle = L.record.enqueue("named")
    raw = _client(backend).hgetall(f"rq:job:{handle.id}")
    func_name, instance, args, kwargs = json.loads(zlib.decompress(raw[b"data"]))
    assert (func_name, instance, args, kwargs) == (L.record.name, None, ["named"], {})
    assert json.loads(raw[b"meta"])["jobkit"]["max_attempts"] == L.FAST.max_attempts
    assert _client(backend).lrange(f"rq:queue:{QUEUE}", 0, -1) == [handle.id.encode()]


def test_rq_info_shows_jobkit_queues_and_failed_jobs(backend, ledger_path, app, workers):
    spawn(workers, backend, ledger_path)
    dead = L.permanent.enqueue("never")
    wait_until(lambda: L.app.backend.dead_letters(QUEUE), timeout=30, what="a dead letter")
    L.app.backend.close()
    waiting = L.record.options(delay=timedelta(hours=1)).enqueue("later")
    redis_url = backend.removeprefix("rq+").split("?")[0]
    rq = Path(sys.executable).with_name("rq")
    info = subprocess.run(
        [str(rq), "info", "--url", redis_url, "-R"], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert f"{QUEUE} " in info.stdout and "1 failed" in info.stdout, info.stdout
    failed = subprocess.run(
        [sys.executable, "-c",
         "import sys, redis; from rq import Queue; from rq.serializers import JSONSerializer;"
         "q = Queue(sys.argv[2], connection=redis.Redis.from_url(sys.argv[1]),"
         " serializer=JSONSerializer);"
         "print(q.failed_job_registry.get_job_ids(), q.scheduled_job_registry.get_job_ids())",
         redis_url, QUEUE],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert dead.id in failed.stdout and waiting.id in failed.stdout, failed.stdout + failed.stderr


def test_rq_sees_the_worker_idle_with_a_fresh_heartbeat_after_a_job(
    backend, ledger_path, app, workers
):
    """jobkit's workers send RQ's worker heartbeat in one round trip and skip rewriting an
    unchanged state: RQ's view of the worker stays what RQ's own loop would write."""
    from rq import Worker

    spawn(workers, backend, ledger_path)
    assert L.record.enqueue("seen").result(timeout=30) == "seen"
    client = _client(backend)

    def idle_and_fresh() -> bool:
        found = [w for w in Worker.all(connection=client) if w.name.startswith("jobkit-")]
        if len(found) != 1 or found[0].get_state() != "idle":
            return False
        beat = found[0].last_heartbeat
        return beat is not None and abs(time.time() - beat.timestamp()) < 10

    wait_until(idle_and_fresh, timeout=30, what="RQ sees the worker idle, its heartbeat fresh")
    assert client.ttl(Worker.all(connection=client)[0].key) > 0


def test_a_delayed_job_runs_on_a_plain_jobkit_worker_never_early(
    backend, ledger_path, app, workers
):
    spawn(workers, backend, ledger_path)
    spawn(workers, backend, ledger_path)  # a second worker does not block the first's scheduling
    sent = time.time()
    handle = L.record.options(delay=timedelta(seconds=2)).enqueue("delayed")
    assert handle.result(timeout=30) == "delayed"
    [(_, _, at)] = runs(ledger_path, "delayed")
    assert at >= sent + 2


def test_retries_follow_the_jobs_retry_policy_then_dead_letter(backend, ledger_path, app, workers):
    spawn(workers, backend, ledger_path)
    handle = L.always_fails.enqueue("flaky")
    dead = wait_until(lambda: L.app.backend.dead_letters(QUEUE), timeout=60, what="dead letter")
    times = [at for _, _, at in runs(ledger_path, "flaky")]
    assert len(times) == L.GROWING.max_attempts
    for n, (earlier, later) in enumerate(itertools.pairwise(times), start=1):
        assert later - earlier >= L.GROWING.min_backoff(n).total_seconds()
    assert dead[0].id == handle.id and "ConnectionError" in dead[0].reason
    assert spi.decode(dead[0].body).attempt == L.GROWING.max_attempts
    assert handle.state is jobkit.JobState.DEAD


def test_sigkilled_worker_job_reruns_within_the_declared_bound(backend, ledger_path, app, workers):
    bound = L.app.backend.capabilities.redelivery_after
    assert bound is not None and bound <= timedelta(seconds=10)
    spawn(workers, backend, ledger_path)
    handle = L.record.enqueue("killed", sleep=3.0)
    wait_until(lambda: runs(ledger_path, "killed"), timeout=30, what="the job started")
    kill_group(workers[0])
    killed_at = time.time()
    workers[0].wait(timeout=30)
    spawn(workers, backend, ledger_path)
    assert handle.result(timeout=60) == "killed"
    _, second = runs(ledger_path, "killed")
    assert second[1] == 2
    # the new worker's start-up (imports, RQ registration) is not part of the bound
    assert second[2] - killed_at <= bound.total_seconds() + 5


def test_a_job_that_swallows_its_time_limit_is_stopped_and_the_worker_goes_on(
    backend, ledger_path, app, workers
):
    """RQ's alarm raises in the job, which may catch it; the limit is hard all the same (the
    work-horse is killed; with SimpleWorker, the worker process, which is replaced)."""
    spawn(workers, backend, ledger_path)
    handle = L.stubborn.enqueue("stubborn", 120.0)
    wait_until(lambda: handle.state is jobkit.JobState.DEAD, timeout=60, what="the job stopped")
    after = L.record.enqueue("after")
    assert after.result(timeout=60) == "after"
    assert L.count(ledger_path, "SELECT COUNT(*) FROM effects WHERE key='stubborn'") == 0
    assert workers[0].poll() is None


def test_a_duplicate_job_id_never_runs_twice_nor_replaces_the_first(
    backend, ledger_path, app, workers
):
    rq = L.app.backend
    first = spi.Envelope(id="dup-1", job=L.record.name, args=("first",), queue=QUEUE)
    second = spi.Envelope(id="dup-1", job=L.record.name, args=("second",), queue=QUEUE)
    rq.send([(first, first.encode())])
    rq.send([(second, second.encode())])
    assert _client(backend).lrange(f"rq:queue:{QUEUE}", 0, -1) == [b"dup-1"]
    spawn(workers, backend, ledger_path)
    assert L.app.handle("dup-1").result(timeout=30) == "first"
    rq.send([(second, second.encode())])  # after it ran, too
    spawn(workers, backend, ledger_path, "--burst")
    workers[-1].wait(timeout=60)
    assert [r[0] for r in runs(ledger_path, "first")] == ["dup-1"] and runs(
        ledger_path, "second"
    ) == []


def test_a_batch_is_queued_in_order_and_leaves_a_job_rq_has_as_it_was(
    backend, ledger_path, app, workers
):
    """Several envelopes in one send go in one pipeline of RQ's unique-enqueue script: each is
    a full RQ job, in order; an id RQ has is skipped; a delayed one is scheduled."""
    rq = L.app.backend
    first = spi.Envelope(id="many-dup", job=L.record.name, args=("first",), queue=QUEUE)
    rq.send([(first, first.encode())])
    later = spi.SystemClock().now() + timedelta(seconds=2)
    batch = [
        spi.Envelope(id="many-0", job=L.record.name, args=("zero",), queue=QUEUE),
        spi.Envelope(id="many-dup", job=L.record.name, args=("second",), queue=QUEUE),
        spi.Envelope(id="many-later", job=L.record.name, args=("later",), queue=QUEUE,
                     not_before=later),
        spi.Envelope(id="many-1", job=L.record.name, args=("one",), queue=QUEUE),
    ]  # fmt: skip
    rq.send([(env, env.encode()) for env in batch])
    client = _client(backend)
    assert client.lrange(f"rq:queue:{QUEUE}", 0, -1) == [b"many-dup", b"many-0", b"many-1"]
    assert client.zrange(f"rq:scheduled:{QUEUE}", 0, -1) == [b"many-later"]
    spawn(workers, backend, ledger_path)
    handles = {job_id: L.app.handle(job_id) for job_id in ("many-0", "many-1", "many-later")}
    assert {k: h.result(timeout=30) for k, h in handles.items()} == {
        "many-0": "zero", "many-1": "one", "many-later": "later"
    }  # fmt: skip
    assert L.app.handle("many-dup").result(timeout=30) == "first"
    assert runs(ledger_path, "second") == []


def test_a_job_queued_twice_runs_once_while_two_workers_take_both_copies(
    backend, ledger_path, app, workers
):
    """RQ's registry cleanup, run by two processes at once (a worker's maintenance and `rq
    info`), can push an abandoned job's id onto its queue twice. Two idle workers then take one
    copy each: the copy that starts second finds the first running and is dropped."""
    handle = L.record.enqueue("twice", sleep=2.0)
    client = _client(backend)
    client.rpush(f"rq:queue:{QUEUE}", handle.id)  # the second requeue of the race
    spawn(workers, backend, ledger_path, "-c", "2")
    assert handle.result(timeout=60) == "twice"
    wait_until(lambda: client.llen(f"rq:queue:{QUEUE}") == 0, timeout=30, what="both taken")
    wait_until(lambda: not client.zcard(f"rq:wip:{QUEUE}"), timeout=30, what="both copies ended")
    assert [(key, attempt) for key, attempt, _ in runs(ledger_path, "twice")] == [(handle.id, 1)]


def test_a_job_rq_keeps_no_result_for_is_still_recorded_succeeded(
    backend, ledger_path, app, workers
):
    """A job sent by plain RQ code with ``result_ttl=0`` (RQ saves no result for it) still gets
    jobkit's SUCCEEDED record and its result."""
    from rq import Queue
    from rq.serializers import JSONSerializer

    queue = Queue(QUEUE, connection=_client(backend), serializer=JSONSerializer)
    queue.enqueue(L.record.name, "no-result", job_id="no-result-1", result_ttl=0)
    spawn(workers, backend, ledger_path)
    assert L.app.handle("no-result-1").result(timeout=30) == "no-result"
    assert [(key, attempt) for key, attempt, _ in runs(ledger_path, "no-result")] == [
        ("no-result-1", 1)
    ]


def test_a_second_job_with_a_succeeded_key_is_acked_without_running(
    backend, ledger_path, app, workers
):
    """Once the first job with an idempotency key has succeeded, a second job with the same
    key is acked without running."""
    spawn(workers, backend, ledger_path)
    first = L.record.options(idempotency_key="once").enqueue("keyed-1")
    assert first.result(timeout=30) == "keyed-1"
    second = L.record.options(idempotency_key="once").enqueue("keyed-2")
    wait_until(
        lambda: L.app.handle(second.id).state is jobkit.JobState.SUCCEEDED, timeout=30,
        what="the duplicate acked",
    )  # fmt: skip
    assert runs(ledger_path, "keyed-2") == [] and len(runs(ledger_path, "keyed-1")) == 1


OUTAGE = 6.0  # seconds redis-server stays down: past the job's end and a few backoffs


def test_a_job_that_ends_while_redis_is_down_is_filed_finished_when_it_is_back(
    backend, redis_server, ledger_path, app, workers
):
    """The job's success meets the outage (its record rides in RQ's own transaction): the
    worker waits for Redis and files it, once, rather than failing the job or quitting; then
    it serves the next job."""
    spawn(workers, backend, ledger_path)
    handle = L.record.enqueue("outlived", sleep=1.0)
    wait_until(lambda: runs(ledger_path, "outlived"), timeout=30, what="the job started")
    redis_server.stop_broker()
    try:
        time.sleep(OUTAGE)  # the outage itself, not a wait for a condition
    finally:
        redis_server.start_broker()
    assert handle.result(timeout=60) == "outlived"
    assert L.record.enqueue("after").result(timeout=60) == "after"
    assert len(runs(ledger_path, "outlived")) == 1
    assert workers[0].poll() is None


def test_an_undecodable_rq_job_is_dead_lettered_and_the_worker_keeps_serving(
    backend, ledger_path, app, workers
):
    probe = probe_from_url(backend)
    probe.inject_raw(QUEUE, b"\x00 not json", id="poison-1")
    spawn(workers, backend, ledger_path)
    after = L.record.enqueue("after-poison")
    assert after.result(timeout=30) == "after-poison"
    dead = wait_until(lambda: probe.dead(QUEUE), timeout=30, what="the poison dead-lettered")
    assert [(d.id, d.body) for d in dead] == [("poison-1", b"\x00 not json")]
    assert _client(backend).zrange(f"rq:failed:{QUEUE}", 0, -1) == [b"poison-1"]
    probe.close()


def test_replay_runs_a_dead_job_again_with_fresh_attempts(backend, ledger_path, app, workers):
    spawn(workers, backend, ledger_path)
    handle = L.permanent.enqueue("replayed")
    wait_until(lambda: L.app.backend.dead_letters(QUEUE), timeout=30, what="dead letter")
    assert L.app.backend.replay(QUEUE) == 1
    wait_until(lambda: len(runs(ledger_path, "replayed")) == 2, timeout=30, what="the replayed run")
    assert [attempt for _, attempt, _ in runs(ledger_path, "replayed")] == [1, 1]
    wait_until(lambda: L.app.backend.dead_letters(QUEUE), timeout=30, what="dead again")
    assert L.app.backend.purge(QUEUE) == 1 and L.app.backend.dead_letters(QUEUE) == []
    assert handle.id not in str(_client(backend).zrange(f"rq:failed:{QUEUE}", 0, -1))


def test_a_priority_is_refused_at_enqueue(backend, app):
    with pytest.raises(jobkit.UnsupportedFeature, match="no priorities"):
        L.record.options(priority=5).enqueue("urgent")


def test_an_unknown_url_option_is_a_clear_error():
    from jobkit_rq import parse_url

    with pytest.raises(jobkit.ConfigurationError, match=r"unknown option.*wrker"):
        parse_url("rq+redis://127.0.0.1:6379/0?wrker=simple")
    with pytest.raises(jobkit.ConfigurationError, match=r"worker='thread'.*fork, simple"):
        parse_url("rq+redis://127.0.0.1:6379/0?worker=thread")


def test_sigterm_lets_the_running_job_finish(backend, ledger_path, app, workers):
    spawn(workers, backend, ledger_path, "--grace", "20")
    handle = L.record.enqueue("graceful", sleep=2.0)
    wait_until(lambda: runs(ledger_path, "graceful"), timeout=30, what="the job started")
    os.killpg(workers[0].pid, signal.SIGTERM)
    assert workers[0].wait(timeout=30) == 0
    assert handle.state is jobkit.JobState.SUCCEEDED
    assert len(runs(ledger_path, "graceful")) == 1
