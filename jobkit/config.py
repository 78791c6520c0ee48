"""Where the backend URL and the app come from, in order of precedence.

1. an explicit value (``--backend`` on the command line, or ``App(backend=...)``);
2. the ``JOBKIT_BACKEND`` environment variable;
3. ``[tool.jobkit] backend`` in ``./pyproject.toml``, or ``backend`` in ``./jobkit.toml``;
4. the embedded default, ``sqlite:///jobkit.db`` in the current directory.

The app (``module:attribute``) for ``jobkit worker`` follows the same order with ``--app``,
``JOBKIT_APP`` and the ``app`` key. String values in the files may use ``${VAR}`` to take
secrets from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobkit.errors import ConfigurationError

DEFAULT_BACKEND = "sqlite:///jobkit.db"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """Replace ``${VAR}`` with the variable's value; a missing variable is an error."""
    env = os.environ if env is None else env

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ConfigurationError(f"configuration uses ${{{name}}}, which is not set")
        return env[name]

    return _VAR.sub(sub, value)


def file_settings(directory: Path | None = None) -> dict[str, Any]:
    """The ``[tool.jobkit]`` table of pyproject.toml, else the top level of jobkit.toml."""
    base = directory or Path.cwd()
    jobkit_toml = base / "jobkit.toml"
    pyproject = base / "pyproject.toml"
    try:
        if jobkit_toml.is_file():
            return dict(tomllib.loads(jobkit_toml.read_text()))
        if pyproject.is_file():
            tool = tomllib.loads(pyproject.read_text()).get("tool", {})
            return dict(tool.get("jobkit", {}))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"cannot read jobkit settings: {exc}") from exc
    return {}


def _setting(explicit: str | None, env_var: str, key: str, default: str | None) -> str | None:
    if explicit:
        return explicit
    if os.environ.get(env_var):
        return os.environ[env_var]
    value = file_settings().get(key)
    if value is not None:
        if not isinstance(value, str):
            raise ConfigurationError(f"setting {key!r} must be a string, not {value!r}")
        return interpolate(value)
    return default


def resolve_backend_url(explicit: str | None = None) -> str:
    url = _setting(explicit, "JOBKIT_BACKEND", "backend", DEFAULT_BACKEND)
    assert url is not None
    return url


def resolve_app_path(explicit: str | None = None) -> str:
    path = _setting(explicit, "JOBKIT_APP", "app", None)
    if path is None:
        raise ConfigurationError(
            "no app given: pass --app module:attribute, set JOBKIT_APP, or set "
            "[tool.jobkit] app in pyproject.toml"
        )
    return path
