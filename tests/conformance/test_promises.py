"""The promise map cannot go stale: every method, parameter and Capabilities field of jobkit's
interfaces (found by introspection) and every number the CLI's read commands print is covered
by at least one registered check, and the README's table is the generated one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from jobkit_conformance import promises
from jobkit_conformance.checks import BY_ID
from jobkit_conformance.cli import main

README = Path(__file__).resolve().parents[2] / "conformance" / "README.md"
START, END = "<!-- promises:start -->", "<!-- promises:end -->"


def test_every_interface_promise_is_covered_by_a_check() -> None:
    uncovered = [
        key
        for key in promises.all_promises()
        if key not in promises.NOT_PROMISES and not promises.COVERAGE.get(key)
    ]
    assert uncovered == [], (
        f"promises without a check: {uncovered}; map each in jobkit_conformance.promises "
        "(and add a check that fails when it is broken)"
    )


def test_the_map_names_only_registered_checks_and_existing_promises() -> None:
    unknown = sorted({c for checks in promises.COVERAGE.values() for c in checks} - set(BY_ID))
    assert unknown == []
    stale = sorted(set(promises.COVERAGE) - set(promises.all_promises()))
    assert stale == [], f"no longer in jobkit's interfaces: {stale}"


def test_receive_promises_name_each_parameter() -> None:
    keys = promises.interface_promises()
    for param in ("queues", "max_messages", "wait", "lease"):
        assert f"Transport.receive({param})" in keys
    assert "Capabilities.survives_broker_restart" in keys


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text()
    match = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), text, re.S)
    assert match is not None, f"{README} has no {START} ... {END} section"
    assert match.group(1) == promises.markdown_table(), (
        "the README's promise table is stale: replace it with `jobkit-conformance promises` output"
    )


def test_the_cli_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promises"]) == 0
    out = capsys.readouterr().out
    assert out == promises.markdown_table()
