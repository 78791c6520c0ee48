"""Contract: the promises of the interfaces, as the ``contract`` and ``stats`` scenarios
observed them (``observe`` operations: promise, ok, what was observed)."""

from __future__ import annotations

from jobkit_conformance.checkers._base import Finding, _finding
from jobkit_conformance.history import F, History, OpType


def observed(history: History, promises: tuple[str, ...]) -> Finding:
    """Every observation of these promises held; the failures say what was observed."""
    ops = [
        op
        for op in history.select(f=F.OBSERVE, type=OpType.OK)
        if op.value.get("promise") in promises
    ]
    if not ops:
        return Finding(
            passed=False, summary=f"no observation of {', '.join(promises)} in the history"
        )
    problems = [
        f"{op.value.get('promise')}: {op.value.get('observed')}"
        for op in ops
        if not op.value.get("ok")
    ]
    return _finding(
        problems,
        f"{len(ops)} observation(s) of {', '.join(promises)} held",
        {"observations": len(ops), "broken": len(problems)},
        "broken promise(s)",
    )
