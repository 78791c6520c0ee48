"""`jobkit worker` options on Celery: they take effect, or the worker refuses to start and says
what to set instead (real brokers, real worker processes)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobkit.spi import WorkerOptions
from tests.apps import ledger as L
from tests.celery.conftest import QUEUE
from tests.waiting import wait_until
from tests.workers import jobkit_cli, running_worker


@pytest.mark.slow
def test_prefetch_option_sets_how_many_messages_a_worker_holds(any_url: str, ledger: Path) -> None:
    L.app.use(any_url)
    try:
        for n in range(6):
            L.record.enqueue(f"held-{n}", sleep=30.0)
        with running_worker(any_url, ledger, "-q", QUEUE, "-c", "1", "--prefetch", "3"):
            # one runs, two more are held: three left ready (prefetch 1 would leave five)
            wait_until(
                lambda: L.app.backend.stats([QUEUE])[0].ready == 3,
                timeout=60, interval=0.2, what="three messages held by the worker",
            )  # fmt: skip
    finally:
        L.app.close()


@pytest.mark.slow
def test_prefetch_option_disagreeing_with_the_url_is_refused(redis_url: str, ledger: Path) -> None:
    url = f"{redis_url}&prefetch=2"
    out = jobkit_cli(
        url, "--app", "tests.apps.ledger:app", "worker", "-q", QUEUE, "--prefetch", "3"
    )
    assert out.returncode != 0
    assert "--prefetch 3 disagrees with prefetch=2" in out.stderr
    assert "set prefetch=3 in the URL" in out.stderr


def test_poll_option_is_the_longest_wait_of_a_redis_receive() -> None:
    from jobkit_celery._celery_app import build_celery
    from jobkit_celery._settings import parse_url
    from jobkit_celery.backend import worker_settings

    options = WorkerOptions(app_path="x:y", poll=timedelta(seconds=5), prefetch=4)
    settings = worker_settings(parse_url("celery+redis://127.0.0.1:6379/0"), options)
    conf = build_celery(settings).conf
    assert conf.broker_transport_options["jobkit_poll"] == 5.0
    assert conf.worker_prefetch_multiplier == 4


def test_prefetch_option_with_the_native_profile_is_refused() -> None:
    from jobkit_celery._settings import parse_url
    from jobkit_celery.backend import worker_settings

    import jobkit

    native = parse_url("celery+redis://127.0.0.1:6379/0?profile=native")
    with pytest.raises(jobkit.ConfigurationError, match="drop profile=native"):
        worker_settings(native, WorkerOptions(app_path="x:y", prefetch=4))
