"""A producer process for the enqueue-durability scenario.

``python -m jobkit_conformance.harness.producer URL QUEUE JOB_ID...`` enqueues
``conformance.effect(job_id)`` for each id, one `App.enqueue` at a time, notes in the effect
ledger (``JOBKIT_CONFORMANCE_LEDGER``) that each enqueue returned, and SIGKILLs itself right
after the last note: whatever the backend had not made durable when `enqueue` returned is lost
with the process, as it would be when a web server is killed after answering its client.
"""

from __future__ import annotations

import os
import signal
import sys

from jobkit import App, EnqueueOptions
from jobkit.spi import open_backend
from jobkit_conformance import jobs
from jobkit_conformance.ledger import Ledger


def main(argv: list[str]) -> None:
    url, queue, *ids = argv
    ledger = Ledger.from_env()
    app = App("jobkit-conformance-producer", backend=open_backend(url))
    app.jobs.update(jobs.app.jobs)
    for job_id in ids:
        app.enqueue(jobs.effect, (job_id,), {}, EnqueueOptions(queue=queue, job_id=job_id))
        ledger.report(job_id)
    # no close, no flush, no atexit: killed right after the last enqueue returned
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main(sys.argv[1:])
