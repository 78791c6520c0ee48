"""Logging for the `jobkit` command: jobkit's own INFO lines, other libraries' from WARNING.

Without ``-v`` the root logger is at WARNING (botocore, kombu, celery and the rest say only what
matters) and the ``jobkit`` logger (adapters log under ``jobkit.<name>``) at INFO. With ``-v``
everything logs at DEBUG. ``--log-format json`` writes JSON lines (`jobkit.logcontext`). The
worker's job processes get the same settings through ``JOBKIT_LOG_LEVEL`` and
``JOBKIT_LOG_FORMAT``.
"""

from __future__ import annotations

import os

from jobkit.logcontext import LogFormat, configure_logging

__all__ = ["configure_logging", "export_to_children"]


def export_to_children(*, verbose: bool, log_format: LogFormat) -> None:
    """Pass this process's logging settings to the worker processes it starts."""
    os.environ["JOBKIT_LOG_LEVEL"] = "DEBUG" if verbose else "INFO"
    os.environ["JOBKIT_LOG_FORMAT"] = log_format
