"""Broker control: the configuration that names it and the command that carries it out."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from jobkit_conformance import config
from jobkit_conformance.broker_control import BrokerControlFailed, CommandBrokerControl
from jobkit_conformance.cli import _config, build_parser
from jobkit_conformance.outcome import CheckOutcome, Outcome, capability_verdicts

from jobkit import ConfigurationError


def test_the_config_file_names_a_broker_control_and_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'backend = "sqlite:///x.db"\nbroker_control = "./broker.sh"\n[settings]\noutage = 30\n'
    )
    cfg = config.load(path)
    assert cfg.broker_control == "./broker.sh"
    assert cfg.settings.outage == 30.0


def test_a_broker_control_that_is_not_a_command_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('backend = "sqlite:///x.db"\nbroker_control = 3\n')
    with pytest.raises(ConfigurationError, match="broker_control"):
        config.load(path)


def test_the_command_line_option_beats_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('backend = "sqlite:///x.db"\nbroker_control = "./file.sh"\n')
    args = build_parser().parse_args(
        ["run", "--config", str(path), "--broker-control", "./cli.sh", "--outage", "4"]
    )
    cfg = _config(args)
    assert cfg.broker_control == "./cli.sh"
    assert cfg.settings.outage == 4.0


def test_the_command_gets_stop_and_start_as_its_last_argument(tmp_path: Path) -> None:
    log = tmp_path / "calls"
    script = f"import sys; open({str(log)!r}, 'a').write(sys.argv[-1] + '\\n')"
    control = CommandBrokerControl(shlex.join([sys.executable, "-c", script, "--"]))
    control.stop()
    control.start()
    assert log.read_text().split() == ["stop", "start"]


def test_a_failing_command_raises_with_its_output() -> None:
    failing = shlex.join([sys.executable, "-c", "import sys; sys.exit('no such service')"])
    with pytest.raises(BrokerControlFailed, match="no such service"):
        CommandBrokerControl(failing).stop()


def test_a_missing_command_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        CommandBrokerControl("/nonexistent/broker-ctl").start()


def test_a_capability_whose_checks_did_not_run_is_not_verified_and_does_not_fail() -> None:
    outcome = CheckOutcome(
        id="durability.broker_restart", capability="broker_restart", scenario="broker_restart",
        description="", outcome=Outcome.NOT_RUN, summary="needs broker control",
    )  # fmt: skip
    (verdict,) = capability_verdicts([outcome], {"broker_restart": True})
    assert verdict.ok
    assert verdict.passed == 0
    assert verdict.summary == "claimed, not verified: needs broker control"
    assert not Outcome.NOT_RUN.fails_run
