"""Logging for the `jobkit` command: jobkit's own INFO lines, other libraries' from WARNING.

Without ``-v`` the root logger is at WARNING (botocore, kombu, celery and the rest say only what
matters) and the ``jobkit`` logger (adapters log under ``jobkit.<name>``) at INFO. With ``-v``
everything logs at DEBUG.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def configure_logging(*, verbose: bool) -> None:
    """Configure the root logger once for this process (replacing earlier handlers)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format=FORMAT, force=True
    )
    logging.getLogger("jobkit").setLevel(logging.DEBUG if verbose else logging.INFO)
