"""The no-op job the benchmarks run (importable as ``noop_app:app`` with bench/ on the path).

``stamp(sent)`` is the latency probe: it appends ``time.time() - sent`` to the file named by
``JOBKIT_BENCH_STAMPS`` (see ``_local``)."""

import os
import time

from jobkit import App

app = App("bench")


@app.job(name="noop", queue="bench")
def noop(i: int) -> None:
    return None


@app.job(name="stamp", queue="bench")
def stamp(sent: float) -> None:
    started = time.time()
    with open(os.environ["JOBKIT_BENCH_STAMPS"], "a") as out:
        out.write(f"{started - sent}\n")
