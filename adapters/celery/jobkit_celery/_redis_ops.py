"""Dead letters, stats and raw access on the Redis broker, straight through redis-py."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis

import jobkit
from jobkit import spi
from jobkit_celery._dlq_record import decode_record, encode_record
from jobkit_celery._names import delayed_name, dlq_name

SEP = "\x06\x16"  # kombu's Redis priority separator
PRIORITY_STEPS = list(range(10))


def list_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps `queue` in, one per priority step."""
    return [queue if pri == 0 else f"{queue}{SEP}{pri}" for pri in PRIORITY_STEPS]


class RedisOps:
    """Thread-safe; fork-safe (redis-py reconnects in a child process)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def _guard(self, what: str) -> Any:
        return _Guard(what)

    def dead_letter(
        self, *, queue: str, job_id: str | None, body: bytes, reason: str, deliveries: int
    ) -> None:
        record = encode_record(
            queue=queue, job_id=job_id, body=body, reason=reason, deliveries=deliveries
        )
        with self._guard("dead-letter a job"):
            self.client.rpush(dlq_name(queue), record)

    def dead_letters(self, queue: str, limit: int) -> list[spi.DeadLetter]:
        with self._guard("list dead letters"):
            raw = self.client.lrange(dlq_name(queue), 0, max(limit, 1) - 1)
        return [decode_record(item, queue) for item in raw]

    def take_dead(
        self, queue: str, ids: Sequence[str] | None
    ) -> list[tuple[bytes | str, spi.DeadLetter]]:
        """Dead letters to replay (raw entry, decoded); not removed yet."""
        with self._guard("read dead letters"):
            raw = self.client.lrange(dlq_name(queue), 0, -1)
        wanted = set(ids) if ids is not None else None
        out = []
        for item in raw:
            dead = decode_record(item, queue)
            if wanted is None or dead.id in wanted:
                out.append((item, dead))
        return out

    def remove_dead(self, queue: str, raw: bytes | str) -> bool:
        """Remove one dead-letter entry; False if it was gone (another replay took it)."""
        with self._guard("remove a replayed dead letter"):
            return bool(self.client.lrem(dlq_name(queue), 1, raw))  # type: ignore[arg-type]

    def restore_dead(self, queue: str, raw: bytes | str) -> None:
        """Put back an entry `remove_dead` took (its replay could not be sent)."""
        with self._guard("restore a dead letter"):
            self.client.rpush(dlq_name(queue), raw)

    def push_raw(self, queue: str, body: bytes) -> None:
        """Put `body` on `queue`'s list as is (how an undecodable message is replayed)."""
        with self._guard("push a message"):
            self.client.lpush(queue, body)

    def purge(self, queue: str) -> int:
        with self._guard("purge dead letters"), self.client.pipeline() as pipe:
            pipe.llen(dlq_name(queue))
            pipe.delete(dlq_name(queue))
            count, _ = pipe.execute()
        return int(count)

    def depth(self, queue: str) -> int:
        with self._guard("read queue depth"), self.client.pipeline(transaction=False) as pipe:
            for key in list_keys(queue):
                pipe.llen(key)
            return sum(int(n) for n in pipe.execute())

    def in_flight(self) -> dict[str, int]:
        """Unacked messages per queue (kombu's ``unacked`` hash: [payload, exchange, rk])."""
        counts: dict[str, int] = {}
        with self._guard("read unacked messages"):
            values = self.client.hvals("unacked")
        for value in values:
            try:
                _payload, _exchange, routing_key = json.loads(value)
            except (TypeError, ValueError):
                continue
            counts[str(routing_key)] = counts.get(str(routing_key), 0) + 1
        return counts

    def stats(self, queues: Sequence[str]) -> list[spi.QueueStats]:
        flight = self.in_flight()
        out = []
        for queue in queues:
            with self._guard("read queue stats"), self.client.pipeline(transaction=False) as pipe:
                pipe.zcard(delayed_name(queue))
                pipe.llen(dlq_name(queue))
                delayed, dead = pipe.execute()
            out.append(
                spi.QueueStats(
                    queue=queue,
                    ready=self.depth(queue),
                    in_flight=flight.get(queue, 0),
                    delayed=int(delayed),
                    dead=int(dead),
                )
            )
        return out

    def known_queues(self) -> list[str]:
        """Queues with anything in them: ready lists, delayed sets, dead letters."""
        names: set[str] = set()
        with self._guard("list queues"):
            for key in self.client.scan_iter(match="jobkit.*", count=500):
                text = key.decode(errors="replace") if isinstance(key, bytes) else key
                for prefix in ("jobkit.dlq.", "jobkit.delayed."):
                    if text.startswith(prefix):
                        names.add(text[len(prefix) :])
            for key in self.client.scan_iter(match="_kombu.binding.*", count=500):
                for member in self.client.smembers(key):
                    text = member.decode(errors="replace") if isinstance(member, bytes) else member
                    parts = text.split(SEP)
                    if parts and parts[-1]:
                        names.add(parts[-1])
        return sorted(names)

    def task_names(self, queue: str, limit: int) -> list[str]:
        """The task names of up to `limit` messages waiting in `queue` (read with LRANGE:
        nothing taken or changed)."""
        names: list[str] = []
        with self._guard("look at waiting messages"):
            for key in list_keys(queue):
                for raw in self.client.lrange(key, 0, max(limit - len(names), 0) - 1):
                    names.append(task_name(raw))
                if len(names) >= limit:
                    break
        return names

    def close(self) -> None:
        self.client.close()


class _Guard:
    """Translate redis-py errors into `BrokerUnavailable` naming what was being done."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if isinstance(exc, redis.RedisError):
            raise jobkit.BrokerUnavailable(f"cannot {self.what} on Redis: {exc}") from exc


def task_name(raw: bytes | str) -> str:
    """The task name of a kombu message on Redis, or "(undecodable)"."""
    try:
        headers = json.loads(raw).get("headers") or {}
        return str(headers["task"])
    except (ValueError, TypeError, AttributeError, KeyError):
        return "(undecodable)"
