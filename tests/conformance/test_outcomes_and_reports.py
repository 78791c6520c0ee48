"""Verdicts, configuration, reports and the CLI's exit codes (no workers involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from jobkit_conformance import checks, config, reports
from jobkit_conformance.checkers import Finding
from jobkit_conformance.cli import main
from jobkit_conformance.outcome import (
    CheckOutcome,
    Outcome,
    RunResult,
    capability_verdicts,
    decide,
)

from jobkit import ConfigurationError

PASSED = Finding(passed=True, summary="fine")
FAILED = Finding(passed=False, summary="broken")


def test_a_claimed_capability_must_pass() -> None:
    assert decide(PASSED, claimed=True, expected_failure=None)[0] is Outcome.PASS
    assert decide(FAILED, claimed=True, expected_failure=None)[0] is Outcome.FAIL


def test_an_expected_failure_is_strict() -> None:
    assert decide(FAILED, claimed=True, expected_failure="why")[0] is Outcome.XFAIL
    outcome, summary = decide(PASSED, claimed=True, expected_failure="why")
    assert outcome is Outcome.XPASS
    assert outcome.fails_run
    assert "remove the declaration" in summary


def test_an_unclaimed_capability_must_be_refused() -> None:
    assert decide(PASSED, claimed=False, expected_failure=None)[0] is Outcome.REFUSED
    assert decide(FAILED, claimed=False, expected_failure=None)[0] is Outcome.FAIL


def _outcome(capability: str, outcome: Outcome) -> CheckOutcome:
    return CheckOutcome(
        id=f"{capability}.x", capability=capability, scenario="s", description="d",
        outcome=outcome, summary="s",
    )  # fmt: skip


def test_a_claimed_capability_with_no_passing_check_fails() -> None:
    verdicts = capability_verdicts(
        [_outcome("delay", Outcome.XFAIL), _outcome("priorities", Outcome.PASS)],
        {"delay": True, "priorities": True},
    )
    by_name = {v.name: v for v in verdicts}
    assert not by_name["delay"].ok
    assert by_name["priorities"].ok


def test_a_capability_whose_checks_do_not_apply_does_not_fail() -> None:
    (verdict,) = capability_verdicts([_outcome("enqueue_errors", Outcome.NOT_APPLICABLE)],
                                     {"enqueue_errors": True})  # fmt: skip
    assert verdict.ok


def test_check_ids_are_unique_and_tied_to_known_capabilities() -> None:
    ids = [c.id for c in checks.CHECKS]
    assert len(ids) == len(set(ids))
    assert all(c.capability in checks.CAPABILITIES for c in checks.CHECKS)


def test_select_takes_globs_and_prefixes_and_rejects_unknown_patterns() -> None:
    assert [c.id for c in checks.select(["retry.max_attempts"])] == ["retry.max_attempts"]
    assert {c.id for c in checks.select(["dlq"])} == {
        "dlq.after_exhaustion", "dlq.contents_intact", "dlq.replay",
        "dlq.list_complete", "dlq.once_per_replay", "dlq.purge_dead_only",
    }  # fmt: skip
    assert [c.id for c in checks.select(["dlq.replay"])] == ["dlq.replay"]
    no_loss = {c.id for c in checks.select(["*.no_loss"])}
    assert {"delivery.no_loss", "crash.no_loss", "shutdown.no_loss"} <= no_loss
    assert all(i.endswith(".no_loss") for i in no_loss)
    with pytest.raises(KeyError):
        checks.select(["nonsense.check"])


def test_config_interpolates_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JKC_SECRET", "s3cret")
    path = tmp_path / "c.toml"
    path.write_text(
        'backend = "sqlite:///${JKC_SECRET}.db"\n[settings]\nlease = 1.5\n'
        '[expected_failures]\n"priority.order" = "no priorities here"\n'
    )
    cfg = config.load(path)
    assert cfg.backend == "sqlite:///s3cret.db"
    assert cfg.settings.lease.total_seconds() == 1.5
    assert cfg.expected_failures == {"priority.order": "no priorities here"}


def test_config_rejects_a_missing_variable_and_an_expected_failure_without_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text('backend = "sqs://${JKC_NOT_SET_ANYWHERE}"\n')
    with pytest.raises(ConfigurationError, match="JKC_NOT_SET_ANYWHERE"):
        config.load(path)
    path.write_text('backend = "memory://"\n[expected_failures]\n"priority.order" = ""\n')
    with pytest.raises(ConfigurationError, match="needs a reason"):
        config.load(path)


def _result() -> RunResult:
    outcomes = (
        CheckOutcome(id="crash.redelivered", capability="redelivery", scenario="crash",
                     description="d", outcome=Outcome.PASS, summary="ok",
                     counts={"recovery_max_s": 1.4}),
        CheckOutcome(id="delivery.no_loss", capability="delivery", scenario="basic",
                     description="d", outcome=Outcome.FAIL, summary="1 lost | pipe",
                     details=("job x lost",)),
        CheckOutcome(id="priority.order", capability="priorities", scenario="priority",
                     description="d", outcome=Outcome.XFAIL, summary="x", reason="known"),
    )  # fmt: skip
    claims = {"redelivery": True, "delivery": True, "priorities": True}
    return RunResult(
        backend="sqlite:///x.db", backend_name="sqlite", outcomes=outcomes,
        capabilities=tuple(capability_verdicts(outcomes, claims)), duration_s=3.0, namespace="n",
    )  # fmt: skip


def test_reports_show_every_check_and_the_verdict(tmp_path: Path) -> None:
    result = _result()
    assert not result.conformant
    suite = ET.fromstring(reports.junit_xml(result).split("\n", 1)[1])
    assert suite.get("failures") == "3"  # delivery.no_loss + capabilities delivery, priorities
    names = [case.get("name") for case in suite.iter("testcase")]
    assert "crash.redelivered" in names
    md = reports.markdown(result)
    assert "`delivery.no_loss`" in md and "1 lost \\| pipe" in md and "1.40 s" in md
    data = json.loads(json.dumps(result.to_dict()))
    assert data["conformant"] is False
    assert [c["outcome"] for c in data["checks"]] == ["pass", "fail", "xfail"]


def test_checks_command_lists_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["checks", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {c["id"] for c in listed} == {c.id for c in checks.CHECKS}


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    assert main(["run", "--backend", "nosuchscheme://x"]) == 2
    assert "no backend for scheme" in capsys.readouterr().err
    assert main(["run", "--backend", "memory://", "--only", "no.such.check"]) == 2
    assert main(["run", "--backend", "memory://", "--xfail", "delivery.no_loss"]) == 2


def test_an_unreachable_broker_exits_3(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory-not-a-file.db"
    directory.mkdir()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run(
        [sys.executable, "-m", "jobkit_conformance.cli", "run", "--backend", f"sqlite:///{directory}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert "broker unreachable" in proc.stderr


def test_pytest_plugin_is_inert_without_its_option(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_one():\n    assert True\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    assert "1 passed" in proc.stdout
    assert "jobkit-conformance::" not in proc.stdout


def test_checks_of_every_scenario_bring_in_the_plain_scenario() -> None:
    assert checks.scenarios_for(checks.select(["delivery.no_loss"])) == ["basic"]
    assert checks.scenarios_for(checks.select(["crash.redelivered"])) == ["crash"]
