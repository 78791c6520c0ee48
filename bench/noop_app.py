"""The no-op job the benchmarks run (importable as ``noop_app:app`` with bench/ on the path)."""

from jobkit import App

app = App("bench")


@app.job(name="noop", queue="bench")
def noop(i: int) -> None:
    return None
