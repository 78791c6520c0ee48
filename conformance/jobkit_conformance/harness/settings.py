"""The run's settings, what every scenario of one run shares, and how a scenario ends early."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobkit import App
from jobkit.spi import Backend
from jobkit_conformance.broker_control import BrokerControl
from jobkit_conformance.ledger import Ledger
from jobkit_conformance.probes import Probe


class NotApplicable(Exception):
    """Raised by a scenario that cannot be set up for this backend; the reason is reported."""


class NotRun(Exception):
    """Raised by a scenario that needs what the run was not given (e.g. broker control); its
    checks are reported as not run, never as passed."""


class ScenarioFailed(Exception):
    """Raised by a scenario when the run cannot go on (e.g. a worker did not start)."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Run settings: short leases and backoffs so the suite takes minutes, not hours."""

    lease: timedelta = timedelta(seconds=2)
    grace: timedelta = timedelta(seconds=5)
    concurrency: int = 2
    timeout: float = 60.0  # longest wait for jobs to settle inside a scenario
    parallel: int = 4  # scenarios run at once
    outage: float = 10.0  # seconds the broker stays stopped in the outage scenario
    profile: str = "default"  # "default" or "full" (longer soaks; see PROFILES)

    @property
    def soak(self) -> Profile:
        return PROFILES[self.profile]

    def to_dict(self) -> dict[str, Any]:
        return {
            "lease_s": self.lease.total_seconds(),
            "grace_s": self.grace.total_seconds(),
            "concurrency": self.concurrency,
            "timeout_s": self.timeout,
            "parallel": self.parallel,
            "profile": self.profile,
            "outage_s": self.outage,
        }


@dataclass(frozen=True, kw_only=True)
class Profile:
    """How hard the volume scenario pushes: `volume_jobs` no-op jobs while `kills` SIGKILLs
    of a worker's process group and `stops` SIGSTOPs past the lease hit the workers."""

    volume_jobs: int
    kills: int
    stops: int


PROFILES: dict[str, Profile] = {
    # 5,000 sends: a backend losing 1 send in 300 at random loses none with probability
    # (299/300)^5000 = 5.6e-8 (see `volume`).
    "default": Profile(volume_jobs=5_000, kills=3, stops=1),
    "full": Profile(volume_jobs=30_000, kills=10, stops=3),
}


@dataclass(kw_only=True)
class Suite:
    """Shared by all scenarios of one run."""

    url: str
    backend: Backend
    probe: Probe
    app: App  # the harness's client, bound to `backend`
    ledger: Ledger
    namespace: str
    workdir: Path
    settings: Settings
    in_process: bool
    broker_control: BrokerControl | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
