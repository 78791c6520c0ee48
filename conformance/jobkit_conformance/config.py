"""The run configuration: a TOML file and/or command-line options.

    backend = "sqs://${AWS_ACCESS_KEY_ID}:${AWS_SECRET_ACCESS_KEY}@us-east-1/prefix"
    broker_control = "./broker.sh"         # optional: called as `./broker.sh stop` / `start`
    only = ["delivery.*", "crash.*"]       # optional: a subset of check ids (globs)

    [settings]                             # optional
    lease = 2.0                            # seconds; the workers' lease for the run
    grace = 5.0
    concurrency = 2
    timeout = 60.0                         # longest wait inside a scenario
    parallel = 4                           # scenarios at once
    profile = "default"                    # or "full": longer soaks (more jobs, more faults)
    outage = 10.0                          # seconds the broker stays down (broker control)

    [expected_failures]                    # strict: an unexpected pass fails the run
    "priority.order" = "our broker has no priorities (tracked in ISSUE-123)"

String values may use ``${VAR}``: secrets stay in the environment, not in the file. A variable
that is not set is a configuration error.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobkit import ConfigurationError
from jobkit.spi import interpolate
from jobkit_conformance.checks import BY_ID
from jobkit_conformance.harness.settings import PROFILES, Settings


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    backend: str
    only: tuple[str, ...] = ()
    expected_failures: dict[str, str] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    broker_control: str | None = None  # a command taking `stop` / `start` (see broker_control)


def _interpolate(value: Any) -> Any:
    if isinstance(value, str):
        return interpolate(value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


_SETTINGS = {"lease", "grace", "concurrency", "timeout", "parallel", "profile", "outage"}
_TOP = {"backend", "only", "settings", "expected_failures", "broker_control"}


def settings_from(table: dict[str, Any], base: Settings | None = None) -> Settings:
    unknown = set(table) - _SETTINGS
    if unknown:
        raise ConfigurationError(
            f"unknown setting(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(_SETTINGS))}"
        )
    s = base or Settings()
    profile = str(table.get("profile", s.profile))
    if profile not in PROFILES:
        raise ConfigurationError(
            f"unknown profile {profile!r}; known: {', '.join(sorted(PROFILES))}"
        )
    try:
        return Settings(
            lease=timedelta(seconds=float(table.get("lease", s.lease.total_seconds()))),
            grace=timedelta(seconds=float(table.get("grace", s.grace.total_seconds()))),
            concurrency=int(table.get("concurrency", s.concurrency)),
            timeout=float(table.get("timeout", s.timeout)),
            parallel=int(table.get("parallel", s.parallel)),
            profile=profile,
            outage=float(table.get("outage", s.outage)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"bad setting: {exc}") from exc


def validate_expected_failures(declared: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for check_id, reason in declared.items():
        if check_id not in BY_ID:
            raise ConfigurationError(
                f"expected failure for unknown check {check_id!r}; see `jobkit-conformance checks`"
            )
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigurationError(
                f"expected failure {check_id!r} needs a reason (a non-empty string)"
            )
        out[check_id] = reason.strip()
    return out


def load(path: Path) -> RunConfig:
    """Read and validate a configuration file (``${VAR}`` interpolated)."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from exc
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigurationError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_TOP))}"
        )
    data = _interpolate(data)
    backend = data.get("backend")
    if not isinstance(backend, str) or not backend:
        raise ConfigurationError(f"{path}: `backend` (a URL string) is required")
    only = data.get("only", [])
    if not isinstance(only, list) or not all(isinstance(x, str) for x in only):
        raise ConfigurationError(f"{path}: `only` must be a list of check ids or globs")
    control = data.get("broker_control")
    if control is not None and (not isinstance(control, str) or not control.strip()):
        raise ConfigurationError(
            f"{path}: `broker_control` must be a command (a string) that takes stop / start"
        )
    return RunConfig(
        backend=backend,
        broker_control=control,
        only=tuple(only),
        expected_failures=validate_expected_failures(dict(data.get("expected_failures", {}))),
        settings=settings_from(dict(data.get("settings", {}))),
    )
