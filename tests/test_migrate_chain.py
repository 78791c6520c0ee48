"""The issue-11 chain, small: jobs of every kind migrated sqlite -> celery+redis -> sqs ->
celery+amqp -> sqlite by the `jobkit migrate` command, SIGKILLed once on every leg and run
again; every job present exactly once at the end with its state, each leg's report exact.
The 10,000-job run is `bench/migrate_chain.py` (see the README)."""

from __future__ import annotations

from pathlib import Path

from bench.migrate_chain import chain


def test_jobs_survive_the_chain_of_four_migrations_with_kills(tmp_path: Path) -> None:
    problems = chain(jobs=120, kills=1, seed_value=11, workdir=tmp_path, batch=10)
    assert problems == []
