"""Run the suite against one backend: open it, check the namespace is empty, run the scenarios
the selected checks need (several at once, each on its own queue with its own workers), judge
the histories, clean up."""

from __future__ import annotations

import os
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from jobkit import App, BrokerUnavailable, ConfigurationError
from jobkit.spi import Backend, open_backend, redact_url
from jobkit_conformance import jobs
from jobkit_conformance.broker_control import BrokerControl
from jobkit_conformance.checkers import enqueue_refused
from jobkit_conformance.checks import CAPABILITIES, Check, scenarios_for
from jobkit_conformance.history import F, History, JobSpec, OpType
from jobkit_conformance.ledger import ENV_VAR, Ledger
from jobkit_conformance.outcome import (
    CheckOutcome,
    Outcome,
    RunResult,
    capability_verdicts,
    decide,
)
from jobkit_conformance.probes import open_probe

from .context import Context
from .scenarios import AUX_QUEUES, EXCLUSIVE, SCENARIOS
from .settings import NotApplicable, NotRun, Settings, Suite
from .workers import ProcessWorker


class NamespaceNotEmpty(ConfigurationError):
    """The queues of the run's namespace already hold messages."""


@dataclass(kw_only=True)
class ScenarioResult:
    name: str
    history: History
    error: str | None = None
    notes: tuple[str, ...] = ()
    not_applicable: str | None = None
    not_run: str | None = None
    duration_s: float = 0.0


Progress = Callable[[str], None]


def _run_scenario(suite: Suite, name: str, progress: Progress) -> ScenarioResult:
    ctx = Context(suite, name)
    started = time.monotonic()
    progress(f"scenario {name}: started")
    try:
        try:
            SCENARIOS[name](ctx)
        finally:
            history = ctx.finish()
    except NotApplicable as exc:
        return ScenarioResult(name=name, history=ctx.history, not_applicable=str(exc))
    except NotRun as exc:
        progress(f"scenario {name}: not run ({exc})")
        return ScenarioResult(name=name, history=ctx.history, not_run=str(exc))
    except Exception as exc:
        logs = "\n".join(
            f"--- {w.name} ---\n{w.log_tail()}" for w in ctx.workers if isinstance(w, ProcessWorker)
        )
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}{logs}"
        progress(f"scenario {name}: ERROR {exc}")
        return ScenarioResult(
            name=name, history=ctx.history, error=error, duration_s=time.monotonic() - started
        )
    elapsed = time.monotonic() - started
    progress(f"scenario {name}: done in {elapsed:.1f} s")
    for note in ctx.notes:
        progress(note)
    return ScenarioResult(name=name, history=history, notes=tuple(ctx.notes), duration_s=elapsed)


def _make(
    check: Check,
    *,
    outcome: Outcome,
    summary: str,
    counts: dict[str, float] | None = None,
    details: tuple[str, ...] = (),
    reason: str | None = None,
    duration_s: float = 0.0,
) -> CheckOutcome:
    return CheckOutcome(
        id=check.id,
        capability=check.capability,
        scenario=check.scenario,
        description=check.description,
        outcome=outcome,
        summary=summary,
        counts=counts or {},
        details=details,
        reason=reason,
        duration_s=duration_s,
    )


def _refusal_history(history: History, feature: str) -> History:
    ids = {
        op.job_id
        for op in history.select(f=F.ENQUEUE, type=OpType.INVOKE)
        if JobSpec.from_value(op.value).feature == feature
    }
    return History(op for op in history if op.job_id in ids or op.f is F.DEPTH)


def run_suite(
    url: str,
    *,
    checks: Sequence[Check],
    expected_failures: dict[str, str] | None = None,
    settings: Settings | None = None,
    workdir: Path | None = None,
    namespace: str | None = None,
    progress: Progress | None = None,
    broker_control: BrokerControl | None = None,
) -> RunResult:
    """Run `checks` against the backend at `url`.

    With `broker_control` the scenarios that stop the broker run too, one at a time after all
    the others (stopping the broker would disturb any scenario running beside them).

    Raises `ConfigurationError` (bad URL, unknown scheme, non-empty namespace, missing probe)
    and `BrokerUnavailable` (the broker cannot be reached) before any scenario runs."""
    settings = settings or Settings()
    expected_failures = expected_failures or {}
    progress = progress or (lambda line: None)
    started = time.monotonic()
    workdir = workdir or Path(tempfile.mkdtemp(prefix="jobkit-conformance-"))
    workdir.mkdir(parents=True, exist_ok=True)
    namespace = namespace or f"jkc{secrets.token_hex(4)}"

    backend: Backend = open_backend(url)
    try:
        caps = backend.capabilities
        backend.stats([f"{namespace}-basic"])  # reach the broker now: BrokerUnavailable -> 3
        probe = open_probe(url, backend)
        claims = {name: cap.claimed(caps, settings.lease) for name, cap in CAPABILITIES.items()}
        wanted = [
            s for s in scenarios_for([c for c in checks if claims[c.capability]]) if s in SCENARIOS
        ]
        refusals = any(
            not claims[c.capability] and CAPABILITIES[c.capability].refusal for c in checks
        )
        if refusals and "unsupported" not in wanted:
            wanted.append("unsupported")
        queues = [f"{namespace}-{s}" for s in [*SCENARIOS, *AUX_QUEUES]]
        if not probe.is_empty(queues):
            raise NamespaceNotEmpty(
                f"the queues of namespace {namespace!r} are not empty; the suite runs only on "
                "fresh queues: pick another --namespace"
            )
        ledger = Ledger(workdir / "ledger.sqlite3")
        ledger.create()
        in_process = not caps.shared_across_processes
        if in_process:
            # job processes of in-process workers inherit this process's environment
            os.environ[ENV_VAR] = str(ledger.path)
        app = App("jobkit-conformance-harness", backend=backend)
        app.jobs.update(jobs.app.jobs)
        suite = Suite(
            url=url,
            backend=backend,
            probe=probe,
            app=app,
            ledger=ledger,
            namespace=namespace,
            workdir=workdir,
            settings=settings,
            in_process=in_process,
            broker_control=broker_control,
        )
        try:
            with ThreadPoolExecutor(max_workers=max(1, settings.parallel)) as pool:
                futures = {
                    name: pool.submit(_run_scenario, suite, name, progress)
                    for name in wanted
                    if name not in EXCLUSIVE
                }
                results = {name: f.result() for name, f in futures.items()}
            for name in wanted:
                if name in EXCLUSIVE:
                    results[name] = _run_scenario(suite, name, progress)
            results = {name: results[name] for name in wanted}
        finally:
            cleanup = getattr(probe, "cleanup", None)  # optional for older probes
            if cleanup is not None:
                cleanup(queues)
            probe.close()
    finally:
        backend.close()

    merged = History()
    for r in results.values():
        merged.extend(r.history.ops)
    merged.extend(op for op in ledger.history() if op.job_id not in {o.job_id for o in merged.ops})
    merged = merged.sorted()

    outcomes: list[CheckOutcome] = []
    for check in checks:
        t0 = time.monotonic()
        cap = CAPABILITIES[check.capability]
        claimed = claims[check.capability]
        if not claimed:
            if cap.refusal and "unsupported" in results:
                res = results["unsupported"]
                finding = enqueue_refused(
                    _refusal_history(res.history, cap.refusal), error="UnsupportedFeature"
                )
                outcome, summary = decide(finding, claimed=False, expected_failure=None)
                outcomes.append(
                    _make(
                        check,
                        outcome=outcome,
                        summary=summary,
                        counts=finding.counts,
                        details=finding.details,
                    )
                )
            else:
                outcomes.append(
                    _make(
                        check,
                        outcome=Outcome.UNCLAIMED,
                        summary=f"{caps.name} does not claim {check.capability}",
                    )
                )
            continue
        if check.scenario == "*":
            errored = [r.name for r in results.values() if r.error]
            history = merged
            notes: tuple[str, ...] = tuple(n for r in results.values() for n in r.notes)
        else:
            res = results[check.scenario]
            if res.not_applicable:
                outcomes.append(
                    _make(
                        check,
                        outcome=Outcome.NOT_APPLICABLE,
                        summary=res.not_applicable,
                        reason=res.not_applicable,
                    )
                )
                continue
            if res.not_run:
                outcomes.append(
                    _make(check, outcome=Outcome.NOT_RUN, summary=res.not_run, reason=res.not_run)
                )
                continue
            if res.error:
                outcomes.append(
                    _make(
                        check,
                        outcome=Outcome.ERROR,
                        summary=res.error.splitlines()[0],
                        details=tuple(res.error.splitlines()),
                        duration_s=res.duration_s,
                    )
                )
                continue
            errored = []
            history = res.history
            notes = res.notes
        finding = check.checker(history)
        outcome, summary = decide(
            finding, claimed=True, expected_failure=expected_failures.get(check.id)
        )
        if errored and outcome is Outcome.PASS:
            summary += f" (scenarios with errors left out: {', '.join(errored)})"
        outcomes.append(
            _make(
                check,
                outcome=outcome,
                summary=summary,
                counts=finding.counts,
                details=finding.details + (notes if not finding.passed else ()),
                reason=expected_failures.get(check.id),
                duration_s=(results[check.scenario].duration_s if check.scenario in results else 0)
                + time.monotonic()
                - t0,
            )
        )
    (workdir / "history.jsonl").write_text(merged.to_jsonl())
    return RunResult(
        backend=redact_url(url),
        backend_name=caps.name,
        outcomes=tuple(outcomes),
        capabilities=tuple(capability_verdicts(outcomes, claims)),
        duration_s=time.monotonic() - started,
        namespace=namespace,
        settings={**settings.to_dict(), "workdir": str(workdir)},
    )


__all__ = ["BrokerUnavailable", "NamespaceNotEmpty", "ScenarioResult", "run_suite"]
