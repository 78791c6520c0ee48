"""Entry point of the `jobkit` command. Errors print one clear line, not a traceback.

Exit codes: 0 success, 1 a check found problems, 2 usage or configuration error,
3 broker unreachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from jobkit.cli import dlq, status, worker
from jobkit.cli.check import add_parser as add_check
from jobkit.errors import BrokerUnavailable, JobkitError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobkit", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        help="backend URL (default: $JOBKIT_BACKEND, [tool.jobkit] backend, sqlite:///jobkit.db)",
    )
    parser.add_argument("--app", help="the app as module:attribute (default: $JOBKIT_APP, ...)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    worker.add_parser(commands)
    status.add_parser(commands)
    dlq.add_parser(commands)
    add_check(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
    )
    try:
        code: int = args.run(args)
        return code
    except BrokerUnavailable as exc:
        print(f"jobkit: broker unreachable: {exc}", file=sys.stderr)
        return 3
    except JobkitError as exc:
        print(f"jobkit: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
