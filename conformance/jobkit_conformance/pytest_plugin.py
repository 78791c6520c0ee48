"""The pytest plugin: inert unless ``--jobkit-backend URL`` or ``--jobkit-config FILE`` is given.

Then it adds one test item per check (``jobkit-conformance::<check id>``); the suite runs once,
on the first item, and each item passes or fails with its check's outcome.

Broker control (for the broker restart and outage checks): ``--jobkit-broker-control CMD``, or
a ``pytest_jobkit_broker_control(config)`` hook in a conftest.py returning an object with
``stop()`` and ``start()`` (see `jobkit_conformance.broker_control.BrokerControl`), for brokers
the tests start themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobkit_conformance.broker_control import BrokerControl, CommandBrokerControl
from jobkit_conformance.outcome import Outcome, RunResult


class _Hooks:
    @pytest.hookspec(firstresult=True)
    def pytest_jobkit_broker_control(self, config: pytest.Config) -> BrokerControl | None:
        """The broker control for the conformance run (first non-None answer wins)."""
        return None


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_Hooks)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jobkit-conformance")
    group.addoption("--jobkit-backend", metavar="URL", help="run the jobkit conformance suite")
    group.addoption("--jobkit-config", metavar="FILE", help="conformance run configuration")
    group.addoption(
        "--jobkit-only", action="append", default=[], metavar="ID", help="subset of checks"
    )
    group.addoption(
        "--jobkit-broker-control",
        metavar="CMD",
        help="command called as `CMD stop` / `CMD start` to stop and start the broker",
    )


class _Run:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.result: RunResult | None = None

    def get(self) -> RunResult:
        if self.result is None:
            from jobkit_conformance import config as configuration
            from jobkit_conformance.checks import select
            from jobkit_conformance.harness import run_suite

            path = self.config.getoption("jobkit_config")
            if path:
                cfg = configuration.load(Path(path))
            else:
                cfg = configuration.RunConfig(backend=self.config.getoption("jobkit_backend"))
            only = tuple(self.config.getoption("jobkit_only")) or cfg.only
            command = self.config.getoption("jobkit_broker_control") or cfg.broker_control
            control: BrokerControl | None = (
                CommandBrokerControl(command)
                if command
                else self.config.hook.pytest_jobkit_broker_control(config=self.config)
            )
            self.result = run_suite(
                cfg.backend,
                checks=select(only),
                expected_failures=cfg.expected_failures,
                settings=cfg.settings,
                broker_control=control,
            )
        return self.result


class ConformanceItem(pytest.Item):
    def __init__(self, *, check_id: str, run: _Run, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check_id = check_id
        self.run = run

    def runtest(self) -> None:
        result = self.run.get()
        outcome = next(o for o in result.outcomes if o.id == self.check_id)
        if outcome.outcome.fails_run:
            raise AssertionError(f"{outcome.outcome.value}: {outcome.summary}")
        if outcome.outcome is Outcome.XFAIL:  # declared, with its reason; strict (xpass fails)
            pytest.xfail(f"{outcome.reason or outcome.summary}")
        if outcome.outcome in (Outcome.UNCLAIMED, Outcome.NOT_APPLICABLE, Outcome.NOT_RUN):
            # Not a missing broker (that fails the run): the backend does not claim the
            # capability and refused it at enqueue, or the check cannot apply to it.
            pytest.skip(f"{outcome.outcome.value}: {outcome.reason or outcome.summary}")

    def reportinfo(self) -> tuple[Path, int, str]:
        return Path("jobkit-conformance"), 0, self.check_id


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not (config.getoption("jobkit_backend") or config.getoption("jobkit_config")):
        return
    from jobkit_conformance.checks import select

    run = _Run(config)
    only = tuple(config.getoption("jobkit_only"))
    for check in select(only):
        items.append(
            ConformanceItem.from_parent(
                session, name=f"jobkit-conformance::{check.id}", check_id=check.id, run=run
            )
        )
