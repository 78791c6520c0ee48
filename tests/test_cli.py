"""The `jobkit` command line: validated durations, options anywhere, exit codes, quiet logs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit.cli.main import build_parser, main
from tests.servers.moto import FAKE_AWS_ENV
from tests.workers import jobkit_command as jobkit


def closed_port() -> int:
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--lease", "0"),
        ("--lease", "nan"),
        ("--lease", "-5"),
        ("--lease", "inf"),
        ("--lease", "soon"),
        ("--poll", "0"),
        ("--grace", "-1"),
    ],
)
def test_bad_duration_is_one_line_naming_the_flag_the_value_and_what_is_allowed(
    flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--backend", "memory://", "worker", f"{flag}={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert flag in err and repr(value) in err and "number of seconds" in err


def test_durations_take_units_and_grace_may_be_zero() -> None:
    args = build_parser().parse_args(["worker", "--lease", "2m", "--poll", "0.5s", "--grace", "0"])
    assert (args.lease, args.poll, args.grace) == (120.0, 0.5, 0.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["--app", "a:app", "--backend", "memory://", "-v", "worker"],
        ["worker", "--app", "a:app", "--backend", "memory://", "-v"],
        ["--app", "a:app", "worker", "--backend", "memory://", "-v"],
        ["-v", "dlq", "list", "q", "--app", "a:app", "--backend", "memory://"],
        ["dlq", "--app", "a:app", "list", "q", "--backend", "memory://", "-v"],
        ["check", "-v", "--app", "a:app", "--backend", "memory://"],
    ],
)
def test_common_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.app, args.backend, args.verbose) == ("a:app", "memory://", True)


def test_options_before_the_command_are_not_reset_by_the_command() -> None:
    args = build_parser().parse_args(["--app", "a:app", "status"])
    assert args.app == "a:app" and args.backend is None and args.verbose is False


@pytest.mark.parametrize("command", [["status"], ["dlq", "list", "work"], ["check"]])
@pytest.mark.parametrize(
    "backend",
    [
        "celery+redis://127.0.0.1:{port}/0",
        "celery+redis://:secret@127.0.0.1:{port}/0?store=redis%3A%2F%2F%3Asecret%40127.0.0.1%3A{port}",
        "celery+amqp://guest:secret@127.0.0.1:{port}//",
        "sqs://us-east-1?endpoint_url=http://127.0.0.1:{port}",
    ],
)
def test_unreachable_backend_exits_3_with_one_line(backend: str, command: list[str]) -> None:
    url = backend.format(port=closed_port())
    out = jobkit("--backend", url, "--app", "tests.apps.ledger:app", *command, env=FAKE_AWS_ENV)
    assert out.returncode == 3, out.stderr
    assert out.stderr.startswith("jobkit: broker unreachable: ")
    assert out.stderr.count("\n") == 1
    assert "secret" not in out.stderr


@pytest.mark.parametrize("command", [["status"], ["dlq", "list", "work"], ["check"]])
def test_unopenable_sqlite_file_is_a_configuration_error(
    command: list[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/a-directory"
    (tmp_path / "a-directory").mkdir()  # a directory is no database file
    out = jobkit("--backend", url, "--app", "tests.apps.ledger:app", *command)
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("jobkit: SQLite database ") and "cannot open" in out.stderr
    assert out.stderr.count("\n") == 1


def test_app_is_found_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "myjobs.py").write_text(
        "from jobkit import App\napp = App('mine')\n\n@app.job\ndef hello() -> None:\n    pass\n"
    )
    console_script = Path(sys.executable).parent / "jobkit"  # not `python -m`: that adds cwd
    done = subprocess.run(
        [str(console_script), "--app", "myjobs:app", "check"],
        cwd=tmp_path,
        env={**os.environ, "JOBKIT_BACKEND": f"sqlite:///{tmp_path / 'jobs.db'}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "cannot import" not in done.stderr


def test_the_command_line_imports_rich_and_sqlite_only_for_the_commands_that_use_them() -> None:
    # `jobkit worker` forks job processes (and RQ's work-horses) from what it imported: a
    # smaller process copies fewer pages per fork, and every command starts faster
    probe = (
        "import sys, jobkit.cli.main; "
        "print(sorted(m for m in ('rich', 'sqlite3') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
