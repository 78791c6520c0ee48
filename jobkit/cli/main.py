"""Entry point of the `jobkit` command. Errors print one clear line, not a traceback.

Exit codes: 0 success, 1 a check found problems, 2 usage or configuration error,
3 broker unreachable.

``--backend``, ``--app`` and ``-v`` may be given before or after the command
(``jobkit --app a:app worker`` and ``jobkit worker --app a:app`` mean the same).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from jobkit._version import __version__
from jobkit.cli import dlq, migrate, status, worker
from jobkit.cli._logging import configure_logging
from jobkit.cli.check import add_parser as add_check
from jobkit.errors import BrokerUnavailable, ConfigurationError, JobkitError
from jobkit.logcontext import LOG_FORMATS
from jobkit.redact import redact_text


def _add_common(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes. On a command, an option not given is left unset
    (SUPPRESS), so it does not overwrite the same option given before the command."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--backend",
        default=default(None),
        help="backend URL (default: $JOBKIT_BACKEND, [tool.jobkit] backend, sqlite:///jobkit.db)",
    )
    parser.add_argument(
        "--app", default=default(None), help="the app as module:attribute (default: $JOBKIT_APP)"
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=default("text"),
        help="text lines, or JSON lines for log shippers (with job_id, job_name, queue, attempt)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="log at DEBUG level, other libraries' INFO lines included",
    )


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Sub-commands that also take the common options."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        _add_common(parser, suppress=True)
        return parser


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobkit", description=__doc__.splitlines()[0])
    _add_common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker.add_parser(commands)
    status.add_parser(commands)
    dlq.add_parser(commands)
    add_check(commands)
    migrate.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(verbose=args.verbose, log_format=args.log_format)
    # `--app shop:app` names a module of the project the command runs in, as with
    # `celery -A` and `rq worker`: a console script does not have the working directory on
    # sys.path by itself. (The job processes get it through PYTHONPATH, see worker/_pool.py.)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        code: int = args.run(args)
        return code
    except ConfigurationError as exc:  # first: an unusable SQLite file is also unreachable
        print(f"jobkit: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokerUnavailable as exc:
        print(f"jobkit: broker unreachable: {_one_line(exc)}", file=sys.stderr)
        return 3
    except JobkitError as exc:
        print(f"jobkit: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _one_line(exc: BaseException) -> str:
    return redact_text(" ".join(str(exc).split()))


if __name__ == "__main__":
    sys.exit(main())
