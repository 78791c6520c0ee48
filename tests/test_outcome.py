from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from jobkit import RetryPolicy
from jobkit.spi import Envelope
from jobkit.worker._outcome import Action, Outcome, decide, decode, encode

POLICY = RetryPolicy(backoff_base=timedelta(seconds=1), jitter=0.0)
ENV = Envelope(job="j", max_attempts=3)


def test_success_is_acked() -> None:
    assert decide(ENV, 1, Outcome(ok=True), POLICY).action is Action.ACK


def test_transient_failure_with_attempts_left_is_released_with_backoff() -> None:
    decision = decide(ENV, 2, Outcome(ok=False, error="E"), POLICY)
    assert decision.action is Action.RELEASE
    assert decision.delay == timedelta(seconds=2)


def test_transient_failure_on_the_last_attempt_is_dead_lettered() -> None:
    decision = decide(ENV, 3, Outcome(ok=False, error="E"), POLICY)
    assert decision.action is Action.DEAD_LETTER
    assert "3 of 3 attempts" in decision.reason


def test_permanent_failure_is_dead_lettered_on_the_first_attempt() -> None:
    decision = decide(ENV, 1, Outcome(ok=False, error="bad", transient=False), POLICY)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason.startswith("permanent error")


def test_retry_delay_asked_by_the_job_wins_over_backoff() -> None:
    decision = decide(ENV, 1, Outcome(ok=False, error="E", retry_delay=7.5), POLICY)
    assert decision.delay == timedelta(seconds=7.5)


def test_envelope_max_attempts_bounds_retries_not_the_current_policy() -> None:
    generous = RetryPolicy(max_attempts=50)
    assert decide(ENV, 3, Outcome(ok=False), generous).action is Action.DEAD_LETTER


@given(
    ok=st.booleans(),
    result=st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2),
    error=st.none() | st.text(max_size=5),
    transient=st.booleans(),
    retry_delay=st.none() | st.floats(min_value=0, max_value=1e6),
    not_started=st.booleans(),
)
def test_an_outcome_crosses_the_pipe_unchanged(
    ok: bool,
    result: object,
    error: str | None,
    transient: bool,
    retry_delay: float | None,
    not_started: bool,
) -> None:
    outcome = Outcome(
        ok=ok,
        result=result,
        error=error,
        transient=transient,
        retry_delay=retry_delay,
        not_started=not_started,
    )
    assert decode(encode(outcome)) == outcome
