"""`jobkit check`: lint the configuration of an app on its backend."""

from __future__ import annotations

import argparse
import json
from typing import Any

from jobkit.cli._common import backend_url, open_app
from jobkit.redact import redact_url


def add_parser(commands: Any) -> None:
    p: argparse.ArgumentParser = commands.add_parser("check", help="lint the configuration")
    p.add_argument("--json", action="store_true", help="print the problems as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    path, app = open_app(args)
    try:
        # Reading the app's queues proves the broker is reachable (BrokerUnavailable: exit 3).
        app.backend.stats(sorted({job.queue for job in app.jobs.values()}) or ["default"])
        problems = list(app.backend.check(app))
        caps = app.backend.capabilities
        for job in app.jobs.values():
            if job.retry.max_attempts > 1 and not caps.dead_letter:
                problems.append(
                    f"job {job.name!r}: {caps.name} has no dead-letter queue; failed jobs are lost"
                )
            if job.priority and caps.priorities <= 1:
                problems.append(
                    f"job {job.name!r} has priority {job.priority}; {caps.name} has none"
                )
    finally:
        app.close()
    where = f"{path} on {redact_url(backend_url(args))}"
    if args.json:
        print(json.dumps({"app": path, "jobs": len(app.jobs), "problems": problems}, indent=2))
        return 1 if problems else 0
    if not problems:
        print(f"ok: {len(app.jobs)} job(s) of {where}")
        return 0
    for problem in problems:
        print(f"problem: {problem}")
    print(f"{len(problems)} problem(s) in {where}")
    return 1
