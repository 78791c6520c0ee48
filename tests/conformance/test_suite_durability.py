"""The durability, broker-control and contract checks end to end: each broken backend of
`jobkit_mutants._durability` is caught by the check meant for it, with a message that names
what was observed; correct backends pass; without broker control the checks that need it are
reported as not run, never as passed.

The broker control here is the self-test's simulated broker (`jobkit_mutants._control`): the
real brokers' restarts are exercised in tests/celery and tests/sqs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.workers import run_conformance

pytestmark = pytest.mark.slow

MINE = ["durability", "outage", "contract", "stats", "cli"]


def _control(db: Path) -> str:
    return shlex.join([sys.executable, "-m", "jobkit_mutants._control", str(db)])


# scheme: (the check that must fail, words its summary must contain, checks the run is limited
# to, whether the run gets the simulated broker's control)
MUTANTS: dict[str, tuple[str, str, list[str], bool]] = {
    "mutant-lingering-send": (
        "durability.producer_killed", "not durable when enqueue returned",
        ["durability.producer_killed"], False,
    ),
    "mutant-stats-no-in-flight": (
        "contract.stats", "in_flight=0", ["contract.stats", "stats.counts"], False,
    ),
    "mutant-in-flight-as-ready": (
        "stats.counts", "in-flight counts not claimed", ["stats.counts"], False,
    ),
    "mutant-extra-message": (
        "contract.receive_max_messages", "receive(max_messages=3)",
        ["contract.receive_max_messages"], False,
    ),
    "mutant-ignores-wait": (
        "contract.receive_wait", "receive(wait=1.5 s) with nothing due",
        ["contract.receive_wait"], False,
    ),
    "mutant-caps-extend": (
        "contract.lease", "extended to 1 h was handed out again", ["contract.lease"], False,
    ),
    "mutant-dlq-no-limit": (
        "contract.dead_letters", "dead_letters(limit=2) listed 3",
        ["contract.dead_letters", "cli.dlq_list"], False,
    ),
    "mutant-peek-takes": (
        "contract.peek", "counted deliveries=2", ["contract.peek"], False,
    ),
    # jobkit_mutants._payloads' mutant, also caught by the transport contract
    "mutant-release-counts": (
        "contract.release_uncounted", "released uncounted", ["contract.release_uncounted"], False,
    ),
    "mutant-volatile": (
        "durability.broker_restart", "never ran after it", ["durability.broker_restart"], True,
    ),
    "mutant-drops-when-down": (
        "outage.no_loss", "enqueue returned while the broker was stopped", ["outage.no_loss"],
        True,
    ),
}  # fmt: skip


def _run(url: str, tmp: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    return run_conformance(url, tmp, "--timeout", "20", "--outage", "3", *extra, timeout=400)


def _outcomes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in data.get("checks", [])}


@pytest.fixture(scope="module")
def mutant_runs(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[int, dict[str, Any], str]]:
    def one(scheme: str) -> tuple[int, dict[str, Any], str]:
        _, _, only, controlled = MUTANTS[scheme]
        tmp = tmp_path_factory.mktemp(scheme)
        args = [arg for pattern in only for arg in ("-k", pattern)]
        if controlled:
            args += ["--broker-control", _control(tmp / "jobs.db")]
        return _run(f"{scheme}+sqlite:///{tmp}/jobs.db", tmp, *args)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(sorted(MUTANTS), pool.map(one, sorted(MUTANTS)), strict=True))


@pytest.mark.parametrize("scheme", sorted(MUTANTS))
def test_a_broken_backend_is_caught_by_its_check_naming_what_was_observed(
    scheme: str, mutant_runs: dict[str, tuple[int, dict[str, Any], str]]
) -> None:
    check, words, _, _ = MUTANTS[scheme]
    code, data, out = mutant_runs[scheme]
    assert code == 1, out
    outcome = _outcomes(data)[check]
    assert outcome["outcome"] == "fail", f"{scheme}: {check} is {outcome}\n{out}"
    assert words in " ".join([outcome["summary"], *outcome["details"]]), outcome


def test_without_broker_control_the_restart_and_outage_checks_are_not_run(tmp_path: Path) -> None:
    code, data, out = _run(
        f"sqlite:///{tmp_path}/jobs.db", tmp_path, *[a for k in MINE for a in ("-k", k)]
    )
    assert code == 0, out
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    for check in ("durability.broker_restart", "outage.worker_survives", "outage.no_loss"):
        assert outcomes.pop(check) == "not run", out
    assert set(outcomes.values()) == {"pass"}, outcomes
    verdicts = {v["name"]: v for v in data["capabilities"]}
    assert verdicts["broker_restart"]["summary"].startswith("claimed, not verified")


def test_a_correct_backend_passes_the_restart_and_outage_checks_with_broker_control(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    code, data, out = _run(
        f"sim-broker+sqlite:///{db}", tmp_path, "--broker-control", _control(db),
        "-k", "durability", "-k", "outage", "-k", "delivery.no_loss",
    )  # fmt: skip
    assert code == 0, out
    assert {c["outcome"] for c in data["checks"]} == {"pass"}, out


def test_memory_claims_no_restart_survival_and_runs_the_transport_contract(tmp_path: Path) -> None:
    code, data, out = _run("memory://", tmp_path, *[a for k in MINE for a in ("-k", k)])
    assert code == 0, out
    outcomes = {c["id"]: c["outcome"] for c in data["checks"]}
    assert outcomes["durability.broker_restart"] == "unclaimed"
    assert {v for k, v in outcomes.items() if k.startswith("contract.")} == {"pass"}


def test_a_broker_control_that_fails_is_reported_with_its_output(tmp_path: Path) -> None:
    failing = shlex.join([sys.executable, "-c", "import sys; sys.exit('cannot stop: no rights')"])
    code, data, out = _run(
        f"sqlite:///{tmp_path}/jobs.db", tmp_path, "--broker-control", failing,
        "-k", "durability.broker_restart",
    )  # fmt: skip
    assert code == 1, out
    (outcome,) = data["checks"]
    assert outcome["outcome"] == "error"
    assert "cannot stop: no rights" in outcome["summary"] + " ".join(outcome["details"])


def test_the_pytest_plugin_takes_broker_control_from_a_conftest_hook(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "from pathlib import Path\n"
        "class Control:\n"
        "    def stop(self):\n"
        "        with open(Path(__file__).with_name('calls'), 'a') as f: f.write('stop\\n')\n"
        "    def start(self):\n"
        "        with open(Path(__file__).with_name('calls'), 'a') as f: f.write('start\\n')\n"
        "def pytest_jobkit_broker_control(config):\n"
        "    return Control()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path),
         "--jobkit-backend", f"sqlite:///{tmp_path}/jobs.db",
         "--jobkit-only", "durability.broker_restart"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 passed" in proc.stdout
    assert (tmp_path / "calls").read_text().split() == ["stop", "start"]
