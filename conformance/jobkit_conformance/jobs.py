"""The conformance jobs: an `App` whose jobs record every execution in the effect ledger.

Workers started by the harness run ``--app jobkit_conformance.jobs:app``; the ledger path comes
from ``JOBKIT_CONFORMANCE_LEDGER``. Every job takes a `token` first: the job id the harness
gave it, so the ledger rows name the job without any worker-side context.

Retry policies are short (backoff base 0.1-0.2 s) so the whole suite runs in minutes; jitter
0.5 gives the backoff a lower bound that `retry.backoff_lower_bound` can check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta

from jobkit import App, Reject, RetryPolicy, current_job
from jobkit_conformance.ledger import Ledger

app = App("jobkit-conformance")

FAST = RetryPolicy(max_attempts=5, backoff_base=timedelta(milliseconds=100), jitter=0.5)
FLAKY = RetryPolicy(max_attempts=4, backoff_base=timedelta(milliseconds=200), jitter=0.5)
FAILING = RetryPolicy(max_attempts=3, backoff_base=timedelta(milliseconds=200), jitter=0.5)
LIMITED = RetryPolicy(max_attempts=2, backoff_base=timedelta(milliseconds=100), jitter=0.5)
TIME_LIMIT = timedelta(seconds=1)


class TransientError(RuntimeError):
    """Raised by the conformance jobs that fail on purpose (transient)."""


# How often long jobs note in the ledger that they are alive (the last sign of a killed run).
_BEAT_EVERY = 0.5


def _run(
    token: str,
    job: str,
    body: str,
    *,
    seconds: float = 0.0,
    key: str | None = None,
    first: Callable[[Ledger], None] | None = None,
    stubborn: bool = False,
) -> None:
    ledger = Ledger.from_env()
    context = current_job()
    row, attempt = ledger.start(token, job, context.attempt if context else None)
    try:
        if first is not None and attempt == 1:
            first(ledger)
        if seconds:
            deadline = time.monotonic() + seconds
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    time.sleep(min(_BEAT_EVERY, left))
                except BaseException:
                    if not stubborn:
                        raise
                ledger.beat(row)
        if body == "effect":
            ledger.effect(token, key)
        elif body.startswith("fail<"):
            if attempt <= int(body[5:]):
                raise TransientError(f"attempt {attempt} fails on purpose")
        elif body == "always_fail":
            raise TransientError(f"attempt {attempt} fails on purpose (always)")
        elif body == "reject":
            raise Reject("permanent failure on purpose")
    except BaseException as exc:
        ledger.end(row, "fail", f"{type(exc).__name__}: {exc}")
        raise
    ledger.end(row, "ok")


@app.job(name="conformance.effect", retry=FAST)
def effect(token: str, key: str | None = None) -> None:
    """Record one side effect under `key` (not deduplicated: duplicates must show)."""
    _run(token, "conformance.effect", "effect", key=key)


@app.job(name="conformance.sleep", retry=FAST)
def sleep(token: str, seconds: float) -> None:
    """Run for `seconds`, beating in the ledger, then record the effect."""
    _run(token, "conformance.sleep", "effect", seconds=seconds)


@app.job(name="conformance.gate", retry=FAST)
def gate(token: str, path: str, limit: float) -> None:
    """Run until the file `path` exists (at most `limit` seconds), beating in the ledger: holds
    a worker busy for exactly as long as the harness needs, then records the effect."""
    ledger = Ledger.from_env()
    context = current_job()
    row, _attempt = ledger.start(token, "conformance.gate", context.attempt if context else None)
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.1)
        ledger.beat(row)
    ledger.effect(token, None)
    ledger.end(row, "ok")


@app.job(name="conformance.flaky", retry=FLAKY)
def flaky(token: str, failures: int) -> None:
    """Fail transiently on the first `failures` attempts, then succeed."""
    _run(token, "conformance.flaky", f"fail<{failures}")


@app.job(name="conformance.always_fail", retry=FAILING)
def always_fail(token: str) -> None:
    """Fail transiently on every attempt."""
    _run(token, "conformance.always_fail", "always_fail")


@app.job(name="conformance.reject", retry=FAST)
def reject(token: str) -> None:
    """Fail permanently (`Reject`) on the first attempt."""
    _run(token, "conformance.reject", "reject")


@app.job(name="conformance.limited", retry=LIMITED, time_limit=TIME_LIMIT)
def limited(token: str, seconds: float) -> None:
    """Run far past the 1 s time limit; the worker must stop it."""
    _run(token, "conformance.limited", "effect", seconds=seconds)


@app.job(name="conformance.stubborn", retry=LIMITED, time_limit=TIME_LIMIT)
def stubborn(token: str, seconds: float) -> None:
    """Run far past the 1 s time limit, swallowing whatever is raised in it (as a job with a
    broad ``except`` does): only killing its process stops it."""
    _run(token, "conformance.stubborn", "effect", seconds=seconds, stubborn=True)


@app.job(name="conformance.noop", retry=FAST)
def noop(token: str) -> None:
    """Record the run and nothing else (the volume scenario's job, counted by name: as cheap as
    a job gets)."""
    _run(token, "conformance.noop", "")


@app.job(name="conformance.pulse", retry=FAST)
def pulse(token: str) -> None:
    """Record the run and nothing else (the pulse that measures a loaded machine's pickup)."""
    _run(token, "conformance.pulse", "")


# How long the grandchild of `spawn` lives; the harness kills it at the end of its scenario.
GRANDCHILD_SECONDS = 60.0


@app.job(name="conformance.spawn", retry=FAST)
def spawn(token: str, seconds: float) -> None:
    """On its first attempt, once its start is in the ledger, start a grandchild process that
    inherits every file descriptor of this job process (the pipes to the worker included), note
    its pid as an effect with key ``grandchild:<pid>``, then run for `seconds`; later attempts
    succeed at once."""

    def grandchild(ledger: Ledger) -> None:
        for name in os.listdir("/proc/self/fd"):
            try:
                os.set_inheritable(int(name), True)
            except OSError:
                pass  # the directory's own descriptor, already closed
        child = subprocess.Popen(
            [sys.executable, "-c", f"import time; time.sleep({GRANDCHILD_SECONDS})"],
            close_fds=False,
        )
        ledger.effect(token, f"grandchild:{child.pid}")

    attempts = Ledger.from_env().runs({token})
    _run(token, "conformance.spawn", "", seconds=0.0 if attempts else seconds, first=grandchild)


# More jobs (payload echo, reject-once, single-attempt, async) live in their own module.
from jobkit_conformance import contract_jobs as _contract_jobs  # noqa: E402, F401
