"""A small builder for hand-written histories (times in seconds from 0)."""

from __future__ import annotations

from typing import Any

from jobkit_conformance.history import F, History, JobSpec, Op, OpType


class H:
    def __init__(self) -> None:
        self.history = History()

    def op(
        self,
        process: str,
        type: OpType,
        f: F,
        t: float,
        job_id: str | None = None,
        **value: Any,
    ) -> H:
        self.history.add(Op(process=process, type=type, f=f, time=t, job_id=job_id, value=value))
        return self

    def enqueue(self, job_id: str, t: float = 0.0, ok: OpType = OpType.OK, **spec: Any) -> H:
        spec.setdefault("kind", "effect")
        self.op("client", OpType.INVOKE, F.ENQUEUE, t, job_id, **JobSpec(**spec).to_value())
        return self.op("client", ok, F.ENQUEUE, t + 0.001, job_id)

    def run(
        self,
        job_id: str,
        start: float,
        end: float | None,
        outcome: OpType = OpType.OK,
        pid: int = 1,
        effect: bool = False,
        key: str | None = None,
        seen: float | None = None,
    ) -> H:
        self.op(f"worker:{pid}", OpType.INVOKE, F.RUN, start, job_id)
        if end is None:
            s = seen if seen is not None else start
            self.op(f"worker:{pid}", OpType.UNKNOWN, F.RUN, s, job_id, last_seen=s)
        else:
            if effect:
                self.op(f"worker:{pid}", OpType.OK, F.EFFECT, end - 0.001, job_id, key=key)
            self.op(f"worker:{pid}", outcome, F.RUN, end, job_id, last_seen=end)
        return self

    def nemesis(self, f: F, t: float, **value: Any) -> H:
        return self.op("nemesis", OpType.OK, f, t, **value)

    def dead(self, t: float, *entries: dict[str, Any], queue: str = "q") -> H:
        return self.op("probe", OpType.OK, F.DEAD, t, queue=queue, entries=list(entries))

    def build(self) -> History:
        return self.history.sorted()
