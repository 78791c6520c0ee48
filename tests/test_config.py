from pathlib import Path

import pytest

from jobkit import ConfigurationError, UnknownBackend
from jobkit.spi import interpolate, open_backend, redact_url, resolve_backend_url


def test_explicit_url_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBKIT_BACKEND", "memory://")
    assert resolve_backend_url("sqlite:///x.db") == "sqlite:///x.db"


def test_environment_beats_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "jobkit.toml").write_text('backend = "sqlite:///from-file.db"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOBKIT_BACKEND", "memory://")
    assert resolve_backend_url() == "memory://"


def test_jobkit_toml_interpolates_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "jobkit.toml").write_text('backend = "sqlite:///${DB_DIR}/jobs.db"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_BACKEND", raising=False)
    monkeypatch.setenv("DB_DIR", "/data")
    assert resolve_backend_url() == "sqlite:////data/jobs.db"


def test_pyproject_tool_table_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.jobkit]\nbackend = "memory://"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_BACKEND", raising=False)
    assert resolve_backend_url() == "memory://"


def test_default_is_the_embedded_sqlite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOBKIT_BACKEND", raising=False)
    assert resolve_backend_url().startswith("sqlite://")


def test_missing_variable_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"\$\{NOPE\}"):
        interpolate("x${NOPE}", {})


def test_unknown_scheme_names_installed_schemes_and_the_package_to_install() -> None:
    with pytest.raises(UnknownBackend) as info:
        open_backend("dramatiq+redis://:secret@localhost/0")
    message = str(info.value)
    assert "memory" in message and "sqlite" in message
    assert "pip install jobkit-dramatiq" in message
    assert "secret" not in message


def test_redaction_hides_password_and_secret_query_values() -> None:
    redacted = redact_url("sqs://AKIA:wJalr@host/?aws_secret_access_key=abc&region=eu-west-1")
    assert "wJalr" not in redacted and "abc" not in redacted
    assert "region=eu-west-1" in redacted


def test_redaction_leaves_urls_without_secrets_unchanged() -> None:
    assert redact_url("sqlite:////tmp/jobs.db") == "sqlite:////tmp/jobs.db"
