"""The backoff of the worker's retries: capped, doubling, logged once per streak."""

from __future__ import annotations

import logging

import pytest

from jobkit import BrokerUnavailable
from jobkit.worker._retrying import Streak


def test_backoff_starts_at_a_tenth_of_a_second_doubles_and_caps_at_5_s() -> None:
    streak = Streak()
    delays = [streak.failed("receive", BrokerUnavailable("down"), 0.0) for _ in range(9)]
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]


def test_a_streak_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    streak = Streak()
    with caplog.at_level(logging.INFO, logger="jobkit.worker"):
        for _ in range(50):
            streak.failed("ack 3 jobs", BrokerUnavailable("connection refused"), 1.0)
        streak.succeeded("ack 3 jobs", 31.0)
    assert [r.getMessage() for r in caplog.records] == [
        "could not ack 3 jobs, retrying (every 5.0 s at most) until it works: connection refused",
        "ack 3 jobs worked again after 50 failed tries over 30.0 s",
    ]


def test_after_a_success_the_next_failure_starts_again_at_a_tenth_of_a_second() -> None:
    streak = Streak()
    for _ in range(5):
        streak.failed("receive", BrokerUnavailable("down"), 0.0)
    streak.succeeded("receive", 1.0)
    assert streak.due(1.0)
    assert streak.failed("receive", BrokerUnavailable("down"), 2.0) == 0.1
