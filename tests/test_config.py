import re
import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from jobkit import ConfigurationError, UnknownBackend, UnsupportedFeature
from jobkit.registry import DISTRIBUTIONS
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


def test_unknown_scheme_names_installed_schemes_and_no_package_that_does_not_exist() -> None:
    with pytest.raises(UnknownBackend) as info:
        open_backend("huey+redis://:secret@localhost/0")
    message = str(info.value)
    assert "memory" in message and "sqlite" in message
    assert "huey" not in message.split("To fix:")[1]
    assert "secret" not in message


@pytest.mark.parametrize(
    ("url", "hint"),
    [("rabbitmq://guest@h//", "amqp://"), ("redis://h/0", "celery+redis://")],
)  # fmt: skip
def test_broker_named_scheme_points_at_the_scheme_that_reaches_it(url: str, hint: str) -> None:
    with pytest.raises(UnknownBackend, match=re.escape(f"write the scheme as {hint}")):
        open_backend(url)


def test_hints_name_only_distributions_that_exist() -> None:
    adapters = Path(__file__).resolve().parent.parent / "adapters"
    published = {
        tomllib.loads(p.read_text())["project"]["name"] for p in adapters.glob("*/pyproject.toml")
    }
    assert set(DISTRIBUTIONS.values()) <= published


def test_redaction_hides_password_and_secret_query_values() -> None:
    redacted = redact_url("sqs://AKIA:wJalr@host/?aws_secret_access_key=abc&region=eu-west-1")
    assert "wJalr" not in redacted and "abc" not in redacted
    assert "region=eu-west-1" in redacted


def test_redaction_leaves_urls_without_secrets_unchanged() -> None:
    assert redact_url("sqlite:////tmp/jobs.db") == "sqlite:////tmp/jobs.db"


def test_refused_delay_hint_names_nothing_jobkit_lacks() -> None:
    from jobkit.spi import Capabilities, Envelope

    caps = Capabilities(name="fifo", max_delay=timedelta(0))
    with pytest.raises(UnsupportedFeature) as info:
        caps.check(Envelope(job="work"), 10, now_delay=timedelta(seconds=5))
    assert "periodic" not in str(info.value)
