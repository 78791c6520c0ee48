"""Outcomes: how a check's finding, the backend's claims and the declared expected failures
combine into a verdict for the run.

* a claimed capability's check must pass;
* an expected failure must be declared with a reason, and is strict: if it passes, the run fails;
* an unclaimed capability must be refused with `UnsupportedFeature` at enqueue where there is a
  feature to ask for, otherwise its checks are reported as unclaimed;
* a claimed capability with no passing check fails the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jobkit_conformance.checkers import Finding


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    XFAIL = "xfail"  # declared expected failure, and it failed
    XPASS = "xpass"  # declared expected failure, but it passed: fails the run (strict)
    REFUSED = "refused"  # capability not claimed, and enqueue refused it: as it should
    UNCLAIMED = "unclaimed"  # capability not claimed, nothing to ask for at enqueue
    NOT_APPLICABLE = "n/a"  # the scenario cannot be set up for this backend (reason given)
    NOT_RUN = "not run"  # the run lacks what the check needs (e.g. broker control): not passed
    ERROR = "error"  # the harness could not run the scenario

    @property
    def fails_run(self) -> bool:
        return self in (Outcome.FAIL, Outcome.XPASS, Outcome.ERROR)


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    id: str
    capability: str
    scenario: str
    description: str
    outcome: Outcome
    summary: str
    counts: dict[str, float] = field(default_factory=dict)
    details: tuple[str, ...] = ()
    reason: str | None = None  # why an expected failure is expected / why not applicable
    duration_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "capability": self.capability,
            "scenario": self.scenario,
            "description": self.description,
            "outcome": str(self.outcome),
            "summary": self.summary,
            "counts": self.counts,
            "details": list(self.details),
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
        }


def decide(
    finding: Finding,
    *,
    claimed: bool,
    expected_failure: str | None,
) -> tuple[Outcome, str]:
    """The outcome of a check that ran, and its summary line."""
    if not claimed:
        # an unclaimed capability's check that ran is a refusal check
        if finding.passed:
            return Outcome.REFUSED, finding.summary
        return Outcome.FAIL, f"not claimed, but not refused at enqueue: {finding.summary}"
    if expected_failure is not None:
        if finding.passed:
            return (
                Outcome.XPASS,
                f"declared as expected failure ({expected_failure}) but passed: "
                "remove the declaration",
            )
        return Outcome.XFAIL, f"{finding.summary} (expected: {expected_failure})"
    return (Outcome.PASS if finding.passed else Outcome.FAIL), finding.summary


@dataclass(frozen=True, kw_only=True)
class CapabilityVerdict:
    name: str
    claimed: bool
    passed: int
    total: int
    ok: bool
    summary: str


def capability_verdicts(
    outcomes: Sequence[CheckOutcome], claims: dict[str, bool]
) -> list[CapabilityVerdict]:
    """Per capability: a claimed one needs at least one passing check among those that ran
    (unless none of its checks applies to the backend, e.g. "broker down" for ``memory://``)."""
    verdicts: list[CapabilityVerdict] = []
    for name, claimed in claims.items():
        mine = [o for o in outcomes if o.capability == name]
        if not mine:
            continue
        passed = sum(1 for o in mine if o.outcome is Outcome.PASS)
        applicable = [o for o in mine if o.outcome not in (Outcome.NOT_APPLICABLE, Outcome.NOT_RUN)]
        ok = not claimed or passed > 0 or not applicable
        if not claimed:
            summary = "not claimed"
        elif not applicable and any(o.outcome is Outcome.NOT_RUN for o in mine):
            summary = "claimed, not verified: " + next(
                o.summary for o in mine if o.outcome is Outcome.NOT_RUN
            )
        elif not applicable:
            summary = "not applicable to this backend"
        elif ok:
            summary = f"{passed}/{len(mine)} checks pass"
        else:
            summary = "claimed, but no check passes"
        verdicts.append(
            CapabilityVerdict(
                name=name, claimed=claimed, passed=passed, total=len(mine), ok=ok, summary=summary
            )
        )
    return verdicts


FIGURES: tuple[tuple[str, str], ...] = (
    ("recovery_p50_s", "recovery p50"),
    ("recovery_max_s", "recovery max"),
    ("lateness_p50_s", "lateness p50"),
    ("lateness_p99_s", "lateness p99"),
    ("lateness_max_s", "lateness max"),
    ("pickup_max_s", "undelayed pickup max"),
    ("bound_s", "bound"),
    ("throughput_jobs_s", "throughput"),
)
"""The measured figures a check may report among its counts (key, label), in display order."""


def figures_of(outcome: CheckOutcome) -> dict[str, float]:
    """The measured figures among a check's counts."""
    return {key: outcome.counts[key] for key, _ in FIGURES if key in outcome.counts}


@dataclass(frozen=True, kw_only=True)
class RunResult:
    backend: str  # redacted URL
    backend_name: str
    outcomes: tuple[CheckOutcome, ...]
    capabilities: tuple[CapabilityVerdict, ...]
    duration_s: float
    namespace: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.outcome.fails_run]

    @property
    def conformant(self) -> bool:
        return not self.failed and all(v.ok for v in self.capabilities)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backend_name": self.backend_name,
            "namespace": self.namespace,
            "conformant": self.conformant,
            "duration_s": round(self.duration_s, 3),
            "settings": self.settings,
            "checks": [o.to_dict() for o in self.outcomes],
            "figures": {o.id: figures_of(o) for o in self.outcomes if figures_of(o)},
            "capabilities": [
                {
                    "name": v.name,
                    "claimed": v.claimed,
                    "passed": v.passed,
                    "total": v.total,
                    "ok": v.ok,
                    "summary": v.summary,
                }
                for v in self.capabilities
            ],
        }
