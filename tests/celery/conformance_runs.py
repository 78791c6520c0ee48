"""What the Celery conformance test modules share: running the suite and reading its report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from tests.servers.redis import RedisServer
from tests.workers import run_conformance


def run(url: str, tmp_path: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    return run_conformance(url, tmp_path, *extra, timeout=600)


def outcomes_of(data: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["outcome"] for c in data.get("checks", [])}


def all_pass(
    data: dict[str, Any], xfails: dict[str, str] | None = None, unclaimed: tuple[str, ...] = ()
) -> bool:
    """Every check passes, except the Transport contract's (Celery implements Backend directly,
    n/a), the declared expected failures, and the checks `unclaimed` names (reported so)."""
    outcomes = outcomes_of(data)
    transport = {outcomes.pop(k) for k in list(outcomes) if k.startswith("contract.")}
    declared = {outcomes.pop(k) for k in xfails or {}}
    not_claimed = {outcomes.pop(k) for k in unclaimed}
    return (
        transport == {"n/a"}
        and declared <= {"xfail"}
        and not_claimed <= {"unclaimed"}
        and set(outcomes.values()) == {"pass"}
    )


def fresh(server: RedisServer) -> None:
    """Empty every database of the test redis-server."""
    client = redis.Redis.from_url(f"{server.url}/0")
    client.flushall()
    client.close()
