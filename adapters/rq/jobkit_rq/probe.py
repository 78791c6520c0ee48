"""Conformance probe for ``rq+redis://``: reads RQ's keys with redis-py, never through the
adapter's sending or receiving code. A raw injection is an RQ job hash whose ``data`` is the given
bytes (zlib-compressed, as RQ stores data) pushed onto the queue, as a foreign RQ producer would.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue
from rq.job import Job

from jobkit_rq import _ops
from jobkit_rq._runtime import Runtime
from jobkit_rq._settings import parse_url


class RqProbe:
    def __init__(self, url: str) -> None:
        self.url = url
        self.runtime = Runtime(parse_url(url))
        self.client: redis.Redis = self.runtime.client
        self._injected = 0

    def depth(self, queue: str) -> int:
        s = _ops.stats(self.runtime, [queue])[0]
        return s.ready + s.in_flight + s.delayed

    def dead(self, queue: str) -> list[Any]:
        from jobkit_conformance.probes import DeadEntry

        return [
            DeadEntry(id=d.id, body=d.body, reason=d.reason)
            for d in _ops.dead_letters(self.runtime, queue, 10_000)
        ]

    def inject_raw(self, queue: str, body: bytes, *, id: str = "") -> None:
        self._injected += 1
        job_id = id or f"raw-{self._injected}"
        q = Queue(queue, connection=self.client)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(
                f"{Job.redis_job_namespace_prefix}{job_id}",
                mapping={"data": zlib.compress(body), "status": "queued", "origin": queue},
            )
            pipe.sadd(Queue.redis_queues_keys, q.key)
            pipe.rpush(q.key, job_id)
            pipe.execute()

    def is_empty(self, queues: Sequence[str]) -> bool:
        return all(
            self.depth(q) == 0 and _ops.stats(self.runtime, [q])[0].dead == 0 for q in queues
        )

    def cleanup(self, queues: Sequence[str]) -> None:
        for name in queues:
            q = self.runtime.queue(name)
            _ops.purge(self.runtime, name)
            ids = [_text(i) for i in self.client.lrange(q.key, 0, -1)]
            ids += [_text(i) for i in self.client.zrange(q.scheduled_job_registry.key, 0, -1)]
            started = self.client.zrange(q.started_job_registry.key, 0, -1)
            ids += [_text(m).split(":")[0] for m in started]
            keys = [f"{Job.redis_job_namespace_prefix}{i}" for i in ids]
            self.client.delete(
                q.key, q.scheduled_job_registry.key, q.started_job_registry.key,
                q.intermediate_queue_key, *keys,
            )  # fmt: skip

    def unreachable_url(self) -> str | None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        return f"rq+redis://127.0.0.1:{port}/0"

    def close(self) -> None:
        self.runtime.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def probe_from_url(url: str) -> RqProbe:
    """The `jobkit.probes` entry point for ``rq+redis://``."""
    return RqProbe(url)
