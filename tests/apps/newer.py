"""The ledger app as a newer deploy defines it: every ledger job plus `future`, which the
workers started on `tests.apps.ledger:app` do not know (a rolling deploy)."""

from __future__ import annotations

from tests.apps.ledger import _record, app

__all__ = ["app", "future"]


@app.job(queue="work")
def future(key: str) -> str:
    return _record(key, 0.0)
