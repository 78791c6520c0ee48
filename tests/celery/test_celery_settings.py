"""URL options, capabilities and `jobkit check` of the Celery backend (no broker needed)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from jobkit_celery import backend_from_url, parse_url

import jobkit
from tests.apps import ledger as L
from tests.servers.redis import RedisServer


def test_redis_url_keeps_job_records_in_the_broker_by_default() -> None:
    s = parse_url("celery+redis://127.0.0.1:6379/3?visibility_timeout=5&prefetch=2")
    assert s.broker_url == "redis://127.0.0.1:6379/3"
    assert s.store_url == "redis://127.0.0.1:6379/3"
    assert s.visibility_timeout == timedelta(seconds=5)
    assert s.prefetch == 2


def test_amqp_url_without_a_store_claims_no_results() -> None:
    backend = backend_from_url("celery+amqp://guest:guest@127.0.0.1:5672//")
    try:
        assert backend.capabilities.results is False
        with pytest.raises(jobkit.UnsupportedFeature, match="store=redis"):
            backend.job_record("x")
    finally:
        backend.close()


def test_redis_claims_restart_survival_only_when_the_url_says_it_persists() -> None:
    for url, claimed in [
        ("celery+redis://127.0.0.1:6379/0", False),
        ("celery+redis://127.0.0.1:6379/0?persistent=yes", True),
        ("celery+amqp://guest:guest@127.0.0.1:5672//", True),  # durable queues, persistent msgs
    ]:
        backend = backend_from_url(url)
        try:
            assert backend.capabilities.survives_broker_restart is claimed, url
        finally:
            backend.close()
    with pytest.raises(jobkit.ConfigurationError, match="unknown option"):
        parse_url("celery+amqp://guest:guest@127.0.0.1:5672//?persistent=yes")


def test_unknown_option_is_an_error_naming_the_accepted_ones() -> None:
    with pytest.raises(jobkit.ConfigurationError, match=r"visiblity_timeout.*visibility_timeout"):
        parse_url("celery+redis://127.0.0.1:6379/0?visiblity_timeout=5")


def test_visibility_timeout_is_a_redis_option_only() -> None:
    with pytest.raises(jobkit.ConfigurationError, match="unknown option"):
        parse_url("celery+amqp://guest:guest@127.0.0.1:5672//?visibility_timeout=5")


def test_check_is_quiet_for_hardened_jobkit_jobs(redis_server: RedisServer) -> None:
    # A reachable broker: `check` also looks at the waiting messages.
    backend = backend_from_url(f"celery+{redis_server.url}/0?visibility_timeout=10")
    try:
        assert backend.check(L.app) == []
    finally:
        backend.close()


def test_check_flags_native_defaults_and_the_eta_trap(redis_server: RedisServer) -> None:
    backend = backend_from_url(f"celery+{redis_server.url}/0?profile=native")
    try:
        problems = backend.check(L.app)
    finally:
        backend.close()
    assert any("acked before they run" in p for p in problems)
    assert any("ETA trap" in p for p in problems)


def test_check_flags_a_visibility_timeout_shorter_than_three_sweeps(
    redis_server: RedisServer,
) -> None:
    url = f"celery+{redis_server.url}/0?visibility_timeout=1&restore_interval=1"
    backend = backend_from_url(url)
    try:
        assert any("restored and run twice" in p for p in backend.check(L.app))
    finally:
        backend.close()


def test_entry_points_name_both_schemes() -> None:
    from importlib.metadata import entry_points

    backends = {ep.name for ep in entry_points(group="jobkit.backends")}
    probes = {ep.name for ep in entry_points(group="jobkit.probes")}
    assert {"celery+redis", "celery+amqp"} <= backends & probes
