"""A Hypothesis state machine interleaving enqueue, crash, duplicate publish and timeout on the
real `MemoryTransport` and `MemoryJobStore` (with a manual clock), driven by the worker's rules
(attempt = envelope attempt + deliveries; dedup on completed keys; release or dead-letter).

Everything is recorded as a history, and the invariant is judged by the suite's own checkers:
every job took effect once per key or sits in the dead-letter queue, and none is lost.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from jobkit_conformance import checkers
from jobkit_conformance.history import F, History, JobSpec, Op, OpType
from jobkit_conformance.views import jobs

from jobkit.spi import (
    Envelope,
    EventKind,
    JobEvent,
    ManualClock,
    MemoryJobStore,
    MemoryTransport,
    Message,
    decode,
    dedup_key,
)

LEASE = timedelta(seconds=10)
MAX_ATTEMPTS = 3
QUEUE = "q"


class JobsUnderFaults(RuleBasedStateMachine):
    ack_early = False  # a broken broker: acknowledges on receipt (see the test at the end)

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.transport = MemoryTransport(clock=self.clock)
        self.store = MemoryJobStore()
        self.history = History()
        self.sent: dict[str, Message] = {}
        self.ids = itertools.count()
        self.t = 0.0

    def _op(
        self, process: str, type: OpType, f: F, job_id: str | None = None, **value: object
    ) -> None:
        self.t += 0.001
        self.history.add(
            Op(process=process, type=type, f=f, time=self.t, job_id=job_id, value=dict(value))
        )

    @rule(key=st.sampled_from([None, "k1", "k2"]))
    def enqueue(self, key: str | None) -> None:
        job_id = f"j{next(self.ids)}"
        env = Envelope(id=job_id, job="effect", args=(job_id,), queue=QUEUE,
                       max_attempts=MAX_ATTEMPTS, idempotency_key=key)  # fmt: skip
        message = Message(queue=QUEUE, body=env.encode(), id=job_id, dedup_key=key)
        spec = JobSpec(kind="effect", key=key, max_attempts=MAX_ATTEMPTS, outcome="any")
        self._op("client", OpType.INVOKE, F.ENQUEUE, job_id, **spec.to_value())
        self.transport.send([message])
        self._op("client", OpType.OK, F.ENQUEUE, job_id)
        self.sent[job_id] = message

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.sent)))
        self._op("nemesis", OpType.OK, F.DUPLICATE, job_id)
        self.transport.send([self.sent[job_id]])

    @rule(fate=st.sampled_from(["ok", "ok", "crash", "timeout"]))
    def deliver(self, fate: str) -> None:
        got = self.transport.receive([QUEUE], max_messages=1, wait=timedelta(0), lease=LEASE)
        if not got:
            return
        (d,) = got
        if self.ack_early:
            self.transport.ack([d])
        env = decode(d.body)
        attempt = env.attempt + d.deliveries
        key = dedup_key(env.id, env.idempotency_key)
        if attempt > env.max_attempts:
            self.transport.dead_letter(d, reason="crash loop: out of attempts")
            return
        if self.store.done([key]):
            self.transport.ack([d])
            return
        process = f"worker:{attempt}"
        self._op(process, OpType.INVOKE, F.RUN, env.id, attempt=attempt)
        if fate == "crash":  # the worker dies: no ack, the lease must run out
            self._op(process, OpType.UNKNOWN, F.RUN, env.id)
            self._op("nemesis", OpType.OK, F.KILL)
            return
        if fate == "timeout":  # the job is stopped at its limit: a failed attempt
            self._op(process, OpType.UNKNOWN, F.RUN, env.id)
            if attempt < env.max_attempts:
                self.transport.release(d, delay=timedelta(seconds=1))
            else:
                self.transport.dead_letter(d, reason="time limit, out of attempts")
            return
        self._op(process, OpType.OK, F.EFFECT, env.id, key=env.idempotency_key)
        self._op(process, OpType.OK, F.RUN, env.id)
        self.store.record([JobEvent(job_id=env.id, job=env.job, kind=EventKind.SUCCEEDED,
                                    attempt=attempt, at=self.clock.now(),
                                    key=env.idempotency_key)])  # fmt: skip
        self.transport.ack([d])

    @rule()
    def time_passes(self) -> None:
        self.clock.advance(LEASE + timedelta(seconds=1))

    def _observed(self) -> History:
        h = History(self.history.ops)
        entries = [
            {"id": dl.id, "reason": dl.reason, "body_hex": dl.body.hex()}
            for dl in self.transport.dead_letters(QUEUE, limit=10_000)
        ]
        h.add(Op(process="probe", type=OpType.OK, f=F.DEAD, time=self.t + 0.5,
                 value={"queue": QUEUE, "entries": entries}))  # fmt: skip
        return h

    @invariant()
    def effects_at_most_once_per_key(self) -> None:
        h = self._observed()
        finding = checkers.effect_once_per_key(h)
        assert not any("took effect" in d and "never" not in d for d in finding.details), finding

    def teardown(self) -> None:
        # drain: time passes and healthy deliveries run until nothing is left
        for _ in range(200):
            self.time_passes()
            if not any(s.ready + s.delayed + s.in_flight for s in self.transport.stats([QUEUE])):
                break
            for _ in range(20):
                self.deliver("ok")
        h = self._observed()
        assert not checkers.no_unexpected(h).details
        assert not checkers.attempts_within_policy(h).details
        effected = {op.value.get("key") or op.job_id for op in h.select(f=F.EFFECT)}
        for view in jobs(h).values():
            key = view.spec.key or view.job_id
            assert view.succeeded or view.dead is not None or key in effected, (
                f"job {view.job_id} lost: {view}"
            )
        dup = [d for d in checkers.effect_once_per_key(h).details if "never" not in d]
        assert not dup


TestJobsUnderFaults = JobsUnderFaults.TestCase
TestJobsUnderFaults.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


class EarlyAckUnderFaults(JobsUnderFaults):
    ack_early = True


def test_the_invariant_catches_a_broker_that_acknowledges_on_receipt() -> None:
    with pytest.raises(AssertionError, match="lost"):
        run_state_machine_as_test(
            EarlyAckUnderFaults,
            settings=settings(max_examples=200, stateful_step_count=30, deadline=None,
                              database=None, print_blob=False),
        )  # fmt: skip
