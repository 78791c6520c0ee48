"""jobkit's SimpleWorker heartbeat thread (`jobkit_rq._heartbeat.Heartbeat`)."""

from __future__ import annotations

from typing import Any, cast

from jobkit_rq._heartbeat import Heartbeat
from rq.worker import BaseWorker


def test_a_stopped_heartbeat_ends_its_thread() -> None:
    """The supervisor stops the heartbeat of an RQ worker whose `work()` ended (a Redis outage)
    before it starts the next worker: no idle thread is left behind per outage."""
    beat = Heartbeat(cast(BaseWorker, None), every=30.0)
    with beat.running(cast(Any, "job"), None):  # no beat is due within the block
        thread = beat._thread
    assert thread is not None and thread.is_alive()
    beat.stop()
    assert not thread.is_alive()
    beat.stop()  # idempotent
