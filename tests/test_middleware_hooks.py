"""The middleware contract in one process (memory backend): registration and headers at
enqueue. The run side is tested with real workers in test_middleware_sqlite.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pytest

from jobkit import App, ConfigurationError
from jobkit.envelope import Envelope, decode
from jobkit.middleware import Middleware


class Headers(Middleware):
    def __init__(self, headers: object) -> None:
        self.headers = headers
        self.after: list[tuple[str, bool]] = []

    def before_enqueue(self, envelope: Envelope) -> Mapping[str, str] | None:
        return self.headers  # type: ignore[return-value]

    def after_enqueue(self, envelope: Envelope, error: BaseException | None) -> None:
        self.after.append((envelope.id, error is not None))


def stored_headers(app: App, job_id: str) -> dict[str, str]:
    (body,) = app.backend.transport.peek(["default"])  # type: ignore[attr-defined]
    envelope = decode(body)
    assert envelope.id == job_id
    return envelope.headers


def test_registering_something_that_is_not_middleware_is_refused_with_what_to_do():
    with pytest.raises(ConfigurationError, match="Subclass Middleware"):
        App("t", middleware=[object()])  # type: ignore[list-item]


def test_headers_from_before_enqueue_are_stored_with_the_job():
    app = App("t", backend="memory://", middleware=[Headers({"x-request": "r1"})])
    job = app.job(lambda: None, name="noop")
    handle = job.enqueue()
    assert stored_headers(app, handle.id) == {"x-request": "r1"}


def test_headers_that_are_not_str_to_str_are_ignored_and_logged(caplog):
    app = App("t", backend="memory://", middleware=[Headers({"x-count": 3})])
    job = app.job(lambda: None, name="noop")
    with caplog.at_level(logging.ERROR, logger="jobkit.middleware"):
        handle = job.enqueue()
    assert stored_headers(app, handle.id) == {}
    assert "headers map str to str; ignored" in caplog.text
