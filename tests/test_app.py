from datetime import timedelta

import pytest

from jobkit import App, ConfigurationError, JobState, SerializationError, UnsupportedFeature


def make_app() -> App:
    return App("t", backend="memory://")


def test_enqueue_returns_a_queued_handle() -> None:
    app = make_app()

    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    handle = add.enqueue(1, 2)
    assert handle.state is JobState.QUEUED
    assert app.backend.stats(["default"])[0].ready == 1


def test_arguments_that_do_not_fit_the_signature_raise_at_enqueue() -> None:
    app = make_app()

    @app.job
    def add(a: int, b: int) -> int:
        return a + b

    with pytest.raises(SerializationError, match="missing a required argument"):
        add.enqueue(1)  # type: ignore[call-arg]


def test_priority_beyond_the_backend_raises_unsupported_feature_at_enqueue() -> None:
    app = make_app()

    @app.job
    def work() -> None:
        pass

    with pytest.raises(UnsupportedFeature, match=r"priorities 0\.\.9"):
        work.options(priority=12).enqueue()
    assert app.backend.stats(["default"])[0].ready == 0  # nothing was sent


def test_invalid_call_in_a_batch_sends_nothing() -> None:
    app = make_app()

    @app.job
    def one(x: int) -> int:
        return x

    with pytest.raises(SerializationError):
        one.enqueue_many([(1,), (object(),)])
    assert app.backend.stats(["default"])[0].ready == 0


def test_same_job_name_twice_is_a_configuration_error() -> None:
    app = make_app()

    @app.job(name="x")
    def first() -> None: ...

    with pytest.raises(ConfigurationError, match="defined twice"):

        @app.job(name="x")
        def second() -> None: ...


def test_delay_and_not_before_together_are_refused() -> None:
    app = make_app()

    @app.job
    def work() -> None: ...

    from datetime import UTC, datetime

    with pytest.raises(ConfigurationError):
        work.options(delay=timedelta(seconds=1), not_before=datetime.now(UTC)).enqueue()


def test_job_called_directly_runs_in_process() -> None:
    app = make_app()

    @app.job
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
