"""`bench/run.py`: the benchmarks' smoke run never rots, and a broken bench never hides.

The smoke run (`--quick`) runs every backend's benchmark with small counts; its numbers are not
checked (speed is measured in bench/, never asserted in tests), only that every benchmark runs
to the end and gives its rows.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench"

_ROW = """
from _rows import Measurement


def row(system: str, rate: float) -> Measurement:
    return Measurement(
        backend="fake", system=system, jobs=10, enqueue_per_s=rate, enqueue_many_per_s=None,
        drain_per_s=rate, latency_p50_ms=1.0, latency_p99_ms=2.0,
    )
"""


def _run(runner: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], Any]:
    out = runner.parent / "result.json"
    done = subprocess.run(
        [sys.executable, str(runner), "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done, json.loads(out.read_text()) if out.exists() else None


def _fake_bench_dir(tmp_path: Path) -> Path:
    """A copy of the runner beside three fake benches: one good, one raising, one without the
    convention's `measure`."""
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("run.py", "_rows.py"):
        shutil.copy(BENCH / name, bench / name)
    (bench / "good_bench.py").write_text(
        _ROW + "\n\ndef measure(*, quick: bool) -> list[Measurement]:\n"
        "    return [row('jobkit', 50.0), row('native', 100.0)]\n"
    )
    (bench / "broken_bench.py").write_text(
        _ROW + "\n\ndef measure(*, quick: bool) -> list[Measurement]:\n"
        "    raise RuntimeError('the broker would not start')\n"
    )
    (bench / "older_bench.py").write_text(
        textwrap.dedent("""
            def measure(kind: str, url: str) -> tuple[float, float]:
                return 1.0, 1.0
        """)
    )
    return bench / "run.py"


def test_a_bench_that_raises_is_an_error_row_and_the_others_still_run(tmp_path: Path) -> None:
    table = tmp_path / "table.md"
    done, result = _run(_fake_bench_dir(tmp_path), "--quick", "--markdown", str(table), timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    status = {m["module"]: m for m in result["modules"]}
    assert status["broken"]["status"] == "error"
    assert "RuntimeError: the broker would not start" in status["broken"]["error"]
    assert status["good"]["status"] == "ok"
    assert status["older"]["status"] == "not measured"
    assert "is not measure(*, quick: bool)" in status["older"]["error"]
    assert [(r["backend"], r["system"]) for r in result["rows"]] == [
        ("fake", "jobkit"),
        ("fake", "native"),
    ]
    assert result["ratios"] == [
        {
            "backend": "fake",
            "native": "native",
            "enqueue_per_s": 0.5,
            "enqueue_many_per_s": None,
            "drain_per_s": 0.5,
            "latency_p50_ms": 1.0,
            "latency_p99_ms": 1.0,
        }
    ]
    assert "ERROR" in done.stdout and "the broker would not start" in done.stdout
    markdown = table.read_text()
    assert "| fake | jobkit | 10 | 50 | - | 50 | 1.00 | 2.00 |" in markdown
    assert "| | *jobkit / native* | | **0.50** | - | **0.50** | **1.00** | **1.00** | |" in markdown
    assert "| broken | ERROR |" in markdown and "`older_bench.py`" in markdown


def test_only_runs_the_named_backends_and_refuses_an_unknown_name(tmp_path: Path) -> None:
    runner = _fake_bench_dir(tmp_path)
    done, result = _run(runner, "--quick", "--only", "good", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [m["module"] for m in result["modules"]] == ["good"]
    done, _ = _run(runner, "--quick", "--only", "nosuch", timeout=120)
    assert done.returncode == 2
    assert "--only nosuch: no such bench module; known: broken, good, older" in done.stderr


def test_only_a_backend_scheme_keeps_the_rows_of_its_variants(tmp_path: Path) -> None:
    runner = _fake_bench_dir(tmp_path)
    (runner.parent / "multi_bench.py").write_text(
        _ROW.replace('backend="fake"', "backend=backend").replace(
            "system: str,", "backend: str, system: str,"
        )
        + "\n\ndef measure(*, quick: bool) -> list[Measurement]:\n"
        "    return [row(b, s, 10.0) for b in ('multi+x', 'multi+x (v)', 'multi+y')\n"
        "            for s in ('jobkit', 'native')]\n"
    )
    done, result = _run(runner, "--quick", "--only", "multi+x", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {r["backend"] for r in result["rows"]} == {"multi+x", "multi+x (v)"}


def test_the_smoke_run_of_every_benchmark_finishes_with_its_rows(tmp_path: Path) -> None:
    runner = tmp_path / "run.py"
    runner.symlink_to(BENCH / "run.py")  # the real runner; the JSON lands in tmp_path
    done, result = _run(runner, "--quick", timeout=1200)
    assert result is not None, done.stdout[-3000:] + done.stderr[-3000:]
    failed = {m["module"]: m["error"] for m in result["modules"] if m["status"] == "error"}
    assert failed == {}, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.returncode == 0
    measured = {m["module"] for m in result["modules"] if m["status"] == "ok"}
    assert {"sqlite", "memory"} <= measured
    for backend in {r["backend"] for r in result["rows"]}:
        systems = [r["system"] for r in result["rows"] if r["backend"] == backend]
        assert "jobkit" in systems and len(systems) >= 2, (backend, systems)
    # every row, jobkit's and the native system's, has the figures the table promises
    promised = ("enqueue_per_s", "drain_per_s", "latency_p50_ms", "latency_p99_ms")
    missing = [
        (r["backend"], r["system"], f) for r in result["rows"] for f in promised if r[f] is None
    ]
    assert missing == []
