"""The application API is typed: mypy --strict sees what a job returns and refuses misspelled
options. Runs mypy on a small application module."""

from __future__ import annotations

from pathlib import Path

from mypy import api

SNIPPET = """
from typing import assert_type
from jobkit import App, AsyncJobDef, JobDef, JobHandle

app = App("t", backend="memory://")

@app.job
def add(a: int, b: int) -> int:
    return a + b

@app.job(queue="rates")
async def fetch_rate(currency: str) -> float:
    return 1.0

assert_type(add.enqueue(1, 2), JobHandle[int])
assert_type(add.enqueue(1, 2).result(), int)
assert_type(add.options(priority=1, queue="q").enqueue(1, 2).result(timeout=1), int)
assert_type(fetch_rate.enqueue("EUR").result(), float)
coroutine = fetch_rate("EUR")  # called directly, an async job gives its coroutine
_ = assert_type(coroutine, Coroutine[Any, Any, float])
coroutine.close()

async def produce() -> None:
    handle = await fetch_rate.options(priority=2).aenqueue("EUR")
    assert_type(handle, JobHandle[float])
    assert_type(await handle.aresult(timeout=5), float)

add.options(prority=1)  # misspelled
add.enqueue("1", 2)  # wrong argument type
"""


def line_of(marker: str) -> int:
    return SOURCE.splitlines().index(next(x for x in SOURCE.splitlines() if marker in x)) + 1


SOURCE = "from typing import Any, Coroutine\n" + SNIPPET.lstrip("\n")


def run_mypy(tmp_path: Path) -> list[str]:
    source = tmp_path / "typed_app.py"
    source.write_text(SOURCE)
    out, err, _ = api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(source)]
    )
    assert err == ""
    return [line for line in out.splitlines() if ": error:" in line]


def test_mypy_knows_result_types_and_refuses_a_misspelled_option(tmp_path: Path) -> None:
    errors = run_mypy(tmp_path)
    assert len(errors) == 2, errors
    misspelled, wrong_type = line_of("# misspelled"), line_of("# wrong argument type")
    assert f'typed_app.py:{misspelled}: error: Unexpected keyword argument "prority"' in errors[0]
    assert f'typed_app.py:{wrong_type}: error: Argument 1 to "enqueue"' in errors[1]
