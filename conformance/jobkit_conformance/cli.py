"""``jobkit-conformance``: run the suite against a backend, or list its checks.

Exit codes: 0 conformant, 1 a check failed, 2 usage or configuration error, 3 broker
unreachable.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from jobkit import BrokerUnavailable, ConfigurationError, JobkitError
from jobkit.spi import redact_url
from jobkit_conformance import checks as registry
from jobkit_conformance import config as configuration
from jobkit_conformance.broker_control import CommandBrokerControl
from jobkit_conformance.outcome import RunResult

OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobkit-conformance", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = commands.add_parser("run", help="run the suite against one backend")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--backend", metavar="URL", help="backend URL, e.g. sqlite:///x.db")
    source.add_argument("--config", metavar="FILE", type=Path, help="TOML run configuration")
    run.add_argument(
        "--only", "-k", action="append", default=[], metavar="ID",
        help="run only checks matching this id, prefix or glob (repeat)",
    )  # fmt: skip
    run.add_argument(
        "--xfail", action="append", default=[], metavar="ID=REASON",
        help="declare an expected failure (strict: an unexpected pass fails the run)",
    )  # fmt: skip
    run.add_argument("--lease", type=float, help="worker lease for the run, seconds (default 2)")
    run.add_argument("--grace", type=float, help="worker SIGTERM grace, seconds (default 5)")
    run.add_argument("--parallel", type=int, help="scenarios run at once (default 4)")
    run.add_argument("--timeout", type=float, help="longest wait inside a scenario (default 60)")
    run.add_argument(
        "--profile", choices=["default", "full"],
        help="default (minutes) or full (a longer soak: more jobs, more faults)",
    )  # fmt: skip
    run.add_argument(
        "--broker-control", metavar="CMD",
        help="a command the suite calls as `CMD stop` / `CMD start` to stop and start the "
        "broker (broker restart and outage checks; without it they are reported as not run)",
    )  # fmt: skip
    run.add_argument("--outage", type=float, help="seconds the broker stays stopped (default 10)")
    run.add_argument("--namespace", help="queue name prefix (default: a fresh random one)")
    run.add_argument("--workdir", type=Path, help="where the ledger, history and logs go")
    run.add_argument("--json", type=Path, metavar="PATH", help="write the JSON report here")
    run.add_argument("--junit", type=Path, metavar="PATH", help="write JUnit XML here")
    run.add_argument("--markdown", type=Path, metavar="PATH", help="write Markdown here")
    run.add_argument(
        "--history", type=Path, metavar="PATH", help="write the history (JSON lines) here"
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    listing = commands.add_parser("checks", help="list the checks")
    listing.add_argument("--json", action="store_true", help="as JSON")
    commands.add_parser(
        "promises", help="the map of interface promises to the checks that cover them (Markdown)"
    )
    return parser


def _list_checks(as_json: bool) -> int:
    if as_json:
        rows = [
            {
                "id": c.id,
                "capability": c.capability,
                "scenario": c.scenario,
                "description": c.description,
            }
            for c in registry.CHECKS
        ]
        print(json.dumps(rows, indent=2))
        return OK
    width = max(len(c.id) for c in registry.CHECKS)
    for c in registry.CHECKS:
        print(f"{c.id:<{width}}  [{c.capability}]  {c.description}")
    return OK


def _xfails(items: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        check_id, sep, reason = item.partition("=")
        if not sep:
            raise ConfigurationError(f"--xfail {item!r}: write ID=REASON (a reason is required)")
        out[check_id.strip()] = reason
    return configuration.validate_expected_failures(out)


def _config(args: argparse.Namespace) -> configuration.RunConfig:
    if args.config is not None:
        cfg = configuration.load(args.config)
    else:
        cfg = configuration.RunConfig(backend=args.backend)
    overrides = {
        k: getattr(args, k)
        for k in ("lease", "grace", "parallel", "timeout", "profile", "outage")
        if getattr(args, k) is not None
    }
    settings = configuration.settings_from(overrides, cfg.settings)
    return configuration.RunConfig(
        backend=cfg.backend,
        broker_control=args.broker_control or cfg.broker_control,
        only=tuple(args.only) or cfg.only,
        expected_failures={**cfg.expected_failures, **_xfails(args.xfail)},
        settings=settings,
    )


def _write_reports(result: RunResult, args: argparse.Namespace) -> None:
    from jobkit_conformance import reports

    if args.json:
        with args.json.open("w") as out:
            reports.write_json(result, out)
    if args.junit:
        args.junit.write_text(reports.junit_xml(result))
    if args.markdown:
        args.markdown.write_text(reports.markdown(result))
    if args.history:
        shutil.copyfile(Path(str(result.settings["workdir"])) / "history.jsonl", args.history)


def run(args: argparse.Namespace) -> int:
    from jobkit_conformance import reports
    from jobkit_conformance.harness import run_suite

    err = Console(stderr=True)
    cfg = _config(args)
    try:
        selected = registry.select(cfg.only)
    except KeyError as exc:
        raise ConfigurationError(
            f"--only {exc.args[0]!r} matches no check; see `jobkit-conformance checks`"
        ) from exc
    if not args.quiet:
        err.print(
            f"jobkit-conformance: {len(selected)} checks against {redact_url(cfg.backend)}",
            highlight=False,
        )
    result = run_suite(
        cfg.backend,
        checks=selected,
        expected_failures=cfg.expected_failures,
        settings=cfg.settings,
        workdir=args.workdir,
        namespace=args.namespace,
        broker_control=CommandBrokerControl(cfg.broker_control) if cfg.broker_control else None,
        progress=None if args.quiet else (lambda line: err.print(f"  {line}", highlight=False)),
    )
    reports.write_terminal(result, Console(width=160) if not sys.stdout.isatty() else None)
    _write_reports(result, args)
    return OK if result.conformant else FAILED


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "checks":
            return _list_checks(args.json)
        if args.command == "promises":
            from jobkit_conformance.promises import markdown_table

            print(markdown_table(), end="")
            return OK
        return run(args)
    except BrokerUnavailable as exc:
        print(f"jobkit-conformance: broker unreachable: {exc}", file=sys.stderr)
        return UNREACHABLE
    except JobkitError as exc:
        print(f"jobkit-conformance: {exc}", file=sys.stderr)
        return USAGE


if __name__ == "__main__":
    sys.exit(main())
