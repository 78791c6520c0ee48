"""The checkers of payload fidelity, dead-letter operations, poison variants, buffered shutdown
and async jobs on hand-written histories: one that must pass, and each anomaly named as seen."""

from __future__ import annotations

from typing import Any

from jobkit_conformance.checkers import async_jobs, dlq_ops, fidelity, poison, shutdown
from jobkit_conformance.history import F, OpType
from jobkit_conformance.payloads import TRICKY, differences, fingerprint, nested

from jobkit.spi import Envelope

from .histories import H

INTS = dict(TRICKY)["ints"]


def _payload(received: Any = None, result: Any = None) -> H:
    sent = ["ints", INTS]
    returned = {"echo": sent}
    h = H().enqueue("p", kind="payload:ints", args=("p", *sent)).run("p", 1, 2)
    h.op("worker:1", OpType.OK, F.RECEIVED, 1.5, "p",
         received=fingerprint(sent if received is None else received),
         returned=fingerprint(returned))  # fmt: skip
    seen = returned if result is None else result
    return h.op("client", OpType.OK, F.RESULT, 3, "p", fingerprint=fingerprint(seen),
                state="succeeded")  # fmt: skip


def test_fingerprints_tell_an_int_from_a_float_and_name_the_path() -> None:
    value = [{"n": 2**63}, nested()]
    assert differences(fingerprint(value), fingerprint(value)) == []
    changed = [{"n": float(2**63)}, nested()]
    assert differences(fingerprint(value), fingerprint(changed)) == [
        '$[0]["n"] is 9.223372036854776e+18, expected 9223372036854775808'
    ]


def test_payload_intact_passes_when_arguments_and_result_come_back_exact() -> None:
    assert fidelity.payload_intact(_payload().build()).passed


def test_payload_intact_names_the_job_and_the_path_of_a_changed_argument() -> None:
    mangled = ["ints", [float(i) if abs(i) > 2**53 else i for i in INTS]]
    finding = fidelity.payload_intact(_payload(received=mangled).build())
    assert not finding.passed
    assert "job p (ints) received other arguments" in finding.summary
    assert "args[1][0] is 9.223372036854776e+18, expected 9223372036854775807" in finding.summary


def test_payload_intact_names_a_result_the_handle_changed() -> None:
    finding = fidelity.payload_intact(_payload(result={"echo": ["ints", []]}).build())
    assert not finding.passed
    assert "handle.result() of job p (ints) is not what the job returned" in finding.summary
    assert "result[" in finding.summary


def test_payload_intact_fails_an_oversized_message_that_was_accepted() -> None:
    h = _payload().enqueue("big", kind="payload:oversized", outcome="skip",
                           feature="max_message_bytes")  # fmt: skip
    finding = fidelity.payload_intact(h.build())
    assert not finding.passed
    assert "over the backend's declared max_message_bytes" in finding.summary


def _dead_entry(job_id: str, reason: str = "permanent error") -> dict[str, str]:
    body = Envelope(id=job_id, job="conformance.reject_once", args=(job_id,)).encode()
    return {"id": job_id, "reason": reason, "body_hex": body.hex()}


def _dlq(ids: list[str]) -> H:
    h = H()
    for i in ids:
        h.enqueue(i, kind="dlq_ops.replayed", job="conformance.reject_once", args=(i,))
        h.run(i, 1, 1.1, OpType.FAIL)
    return h


def test_list_complete_passes_and_names_missing_and_reasonless_entries() -> None:
    h = _dlq(["a", "b"])
    h.op("client", OpType.OK, F.LIST, 2, entries=[_dead_entry("a"), _dead_entry("b")])
    assert dlq_ops.list_complete(h.build()).passed
    h = _dlq(["a", "b"])
    h.op("client", OpType.OK, F.LIST, 2, entries=[_dead_entry("a", reason="")])
    finding = dlq_ops.list_complete(h.build())
    assert "the listing shows 1 of the 2 dead letters" in finding.summary
    assert "dead letter a is listed without a reason" in finding.details


def _replays(counts: list[int], depth: int, runs_of_b: int = 1) -> H:
    h = _dlq(["a", "b"])
    h.op("client", OpType.OK, F.REPLAY, 3, ids=["a"], count=1, invoked_at=3)
    h.op("client", OpType.OK, F.REPLAY, 4, race=2, counts=counts, invoked_at=4)
    h.op("probe", OpType.OK, F.DEPTH, 4.5, depth=depth, replayed=2)
    h.run("a", 5, 5.1)
    for n in range(runs_of_b):
        h.run("b", 5 + n, 5.1 + n)
    return h


def test_replay_once_passes_when_the_racing_replays_moved_each_dead_letter_once() -> None:
    assert dlq_ops.replay_once(_replays([1, 0], depth=2).build()).passed


def test_replay_once_says_racing_replays_sent_duplicates() -> None:
    finding = dlq_ops.replay_once(_replays([1, 1], depth=3, runs_of_b=2).build())
    assert not finding.passed
    assert "the racing replays reported moving 1 + 1 dead letter(s); 1 were in" in finding.summary
    assert any("holds 3 message(s) for 2 replayed" in d for d in finding.details)
    assert "job b ran 2 times after it was replayed once (by racing replays)" in finding.details


def _purge(before: int, after: int, ready_ran: bool) -> H:
    h = H().enqueue("d", kind="dlq_ops.purged", outcome="skip").run("d", 1, 1.1, OpType.FAIL)
    h.enqueue("r", 2, kind="dlq_ops.ready")
    h.op("probe", OpType.OK, F.DEPTH, 2.5, depth=before, purge="before")
    h.op("client", OpType.OK, F.PURGE, 3, count=1, invoked_at=3)
    h.op("probe", OpType.OK, F.DEPTH, 3.1, depth=after, purge="after")
    h.dead(3.2)
    if ready_ran:
        h.run("r", 4, 4.1)
    return h


def test_purge_dead_only_passes_when_waiting_jobs_survive() -> None:
    assert dlq_ops.purge_dead_only(_purge(1, 1, ready_ran=True).build()).passed


def test_purge_dead_only_says_the_purge_removed_waiting_messages() -> None:
    finding = dlq_ops.purge_dead_only(_purge(1, 0, ready_ran=False).build())
    assert not finding.passed
    assert "the purge removed 1 message(s) that were not dead letters" in finding.summary
    assert "job r, ready when the dead letters were purged, never ran to success" in (
        finding.details
    )


def _poison(*, early_dead: list[str], state: str = "dead", attempt: int = 1) -> H:
    h = H()
    for job_id, expect in (("w", "dead"), ("v", "wait"), ("u", "run")):
        h.op("nemesis", OpType.OK, F.INJECT, 0, job_id, variant=job_id, expect=expect)
    h.enqueue("next", 0.5)
    h.run("next", 1, 1.1)
    early = [{"id": i, "reason": "r"} for i in ["w", *early_dead]]
    h.op("probe", OpType.OK, F.DEAD, 1.2, queue="q", entries=early, early=4.0)
    h.op("probe", OpType.OK, F.WORKER, 1.3, alive=True)
    h.op("worker:2", OpType.INVOKE, F.RUN, 5, "u", worker_attempt=attempt)
    h.op("worker:2", OpType.OK, F.RUN, 5.1, "u", last_seen=5.1)
    h.dead(6, {"id": "w", "reason": "r"}, {"id": "v", "reason": "timeout"})
    for job_id, told in (("w", state), ("v", "dead"), ("u", "succeeded")):
        h.op("client", OpType.OK, F.RESULT, 7, job_id, state=told)
    return h


def test_poison_variants_pass_when_each_ends_as_the_policy_says() -> None:
    assert poison.poison_variants_handled(_poison(early_dead=[]).build()).passed


def test_poison_variants_name_a_newer_envelope_dead_lettered_at_once() -> None:
    finding = poison.poison_variants_handled(_poison(early_dead=["v"]).build())
    assert "message v (v) was dead-lettered within 1.2 s, before the worker's unknown-job" in (
        finding.summary
    )


def test_poison_variants_name_a_lying_handle_and_counted_releases() -> None:
    finding = poison.poison_variants_handled(
        _poison(early_dead=[], state="queued", attempt=3).build()
    )
    assert "the handle of message w (w) reports 'queued'; the job is in the dead-letter queue" in (
        finding.details
    )
    assert any("ran as attempt 3" in d for d in finding.details)


def _shutdown(*, stray: bool, dead_unrun: bool) -> H:
    h = H().enqueue("a", kind="buffered").enqueue("b", kind="buffered")
    h.run("a", 1, 2)
    h.nemesis(F.TERM, 1.5)
    if stray:
        h.run("b", 1.8, 2.5)
    h.op("nemesis", OpType.INVOKE, F.WORKER, 3)
    if dead_unrun:
        h.dead(5, {"id": "b", "reason": "delivered 2 times, over max attempts 1"})
    elif not stray:
        h.run("b", 4, 4.5)
    return h


def test_buffered_run_once_passes_when_the_next_worker_runs_the_buffered_job() -> None:
    assert shutdown.buffered_run_once(_shutdown(stray=False, dead_unrun=False).build()).passed


def test_buffered_run_once_names_a_job_dead_lettered_without_running() -> None:
    finding = shutdown.buffered_run_once(_shutdown(stray=False, dead_unrun=True).build())
    assert "was dead-lettered without ever running: delivered 2 times" in finding.summary


def test_buffered_run_once_names_a_job_started_by_the_stopping_worker() -> None:
    finding = shutdown.buffered_run_once(_shutdown(stray=True, dead_unrun=False).build())
    assert "the stopping worker started a new job" in finding.summary


def test_async_ran_blames_a_missing_await_only_when_the_handle_claims_success() -> None:
    h = H().enqueue("a", kind="async").enqueue("b", kind="async")
    h.op("client", OpType.OK, F.RESULT, 3, "a", state="succeeded")
    h.op("client", OpType.OK, F.RESULT, 3, "b", state="queued")
    finding = async_jobs.async_ran(h.build())
    assert (
        "async job a never ran its body, yet its handle reports 'succeeded'" in finding.details[0]
    )
    assert finding.details[1] == "async job b never ran (its handle reports 'queued')"
    ok = H().enqueue("a", kind="async").run("a", 1, 2, effect=True)
    assert async_jobs.async_ran(ok.build()).passed


def test_poison_variants_do_not_blame_a_dead_letter_by_an_old_worker_past_the_timeout() -> None:
    h = H()
    h.op("nemesis", OpType.OK, F.INJECT, 0, "u", variant="u", expect="run", since=0.0)
    h.op("probe", OpType.OK, F.DEAD, 1, queue="q", entries=[], early=4.0)
    h.op("nemesis", OpType.OK, F.WORKER, 5, exited=True)  # the old worker left after 4 s
    h.dead(9, {"id": "u", "reason": "no worker could run it within 0:00:04"})
    finding = poison.poison_variants_handled(h.build())
    assert finding.passed
    assert "the hand-over to the new worker was not tested" in finding.summary
    h = H()
    h.op("nemesis", OpType.OK, F.INJECT, 0, "u", variant="u", expect="run", since=0.0)
    h.op("probe", OpType.OK, F.DEAD, 1, queue="q", entries=[], early=4.0)
    h.op("nemesis", OpType.OK, F.WORKER, 2, exited=True)
    h.dead(9, {"id": "u", "reason": "no worker could run it within 0:00:04"})
    finding = poison.poison_variants_handled(h.build())
    assert "although a worker that defines the job was started" in finding.summary
