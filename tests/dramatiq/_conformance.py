"""What the Dramatiq conformance modules share: one module per broker (and one for the native
defaults) so that ``--dist loadfile`` runs them on different pytest workers at once."""

from __future__ import annotations

from typing import Any


def outcomes(data: dict[str, Any]) -> dict[str, str]:
    """Each check's id and outcome in a `run_conformance` JSON report."""
    return {c["id"]: c["outcome"] for c in data.get("checks", [])}
