"""Dead letters, stats and raw access on the Redis broker, straight through redis-py."""

from __future__ import annotations

import hashlib
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


REPLAY_CLAIM_MS = 15_000
"""How long a replay holds a dead letter it is sending. A claim is held for one send; if the
replay dies, the letter can be replayed again once the claim lapses."""

# KEYS: dead-letter list, claim key. ARGV: entry, claim ms. 1 if claimed; 0 if the entry is
# gone (replayed or purged) or claimed by another replay.
_CLAIM = """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], 1, 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: dead-letter list, claim key. ARGV: entry.
_REPLAYED = """
redis.call('LREM', KEYS[1], 1, ARGV[1])
redis.call('DEL', KEYS[2])
return 1
"""


def claim_name(queue: str, raw: bytes | str) -> str:
    """The key a replay sets while it sends the dead-letter entry `raw` of `queue`."""
    data = raw if isinstance(raw, bytes) else raw.encode()
    return f"jobkit.replaying.{queue}.{hashlib.sha1(data).hexdigest()}"


def list_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps `queue` in, one per priority step."""
    return [queue if pri == 0 else f"{queue}{SEP}{pri}" for pri in PRIORITY_STEPS]


class RedisOps:
    """Thread-safe; fork-safe (redis-py reconnects in a child process)."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self._claim = self.client.register_script(_CLAIM)
        self._replayed = self.client.register_script(_REPLAYED)

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

    def claim_dead(self, queue: str, raw: bytes | str) -> bool:
        """Claim one dead-letter entry for a replay, for `REPLAY_CLAIM_MS`: False if it is gone
        (another replay sent it) or another replay holds it. The entry stays in the dead-letter
        queue until `replayed`, so a replay killed before its send loses nothing: the claim
        lapses and a later replay sends it."""
        with self._guard("claim a dead letter"):
            return bool(
                self._claim(
                    keys=[dlq_name(queue), claim_name(queue, raw)], args=[raw, REPLAY_CLAIM_MS]
                )
            )

    def replayed(self, queue: str, raw: bytes | str) -> None:
        """Remove a claimed entry that has been sent, and its claim (one step)."""
        with self._guard("remove a replayed dead letter"):
            self._replayed(keys=[dlq_name(queue), claim_name(queue, raw)], args=[raw])

    def unclaim(self, queue: str, raw: bytes | str) -> None:
        """Drop the claim on an entry whose send failed (it stays in the dead-letter queue)."""
        with self._guard("release a dead letter"):
            self.client.delete(claim_name(queue, raw))

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
        """Job queues: those bound to an exchange, or with delayed jobs or dead letters. Not
        Celery's and kombu's own (remote control "pidbox" and reply queues, events)."""
        names: set[str] = set()
        with self._guard("list queues"):
            for key in self.client.scan_iter(match="jobkit.*", count=500):
                text = key.decode(errors="replace") if isinstance(key, bytes) else key
                for prefix in ("jobkit.dlq.", "jobkit.delayed."):
                    if text.startswith(prefix):
                        names.add(text[len(prefix) :])
            for key in self.client.scan_iter(match="_kombu.binding.*", count=500):
                if _is_internal_exchange(_text(key)[len("_kombu.binding.") :]):
                    continue
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


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _is_internal_exchange(name: str) -> bool:
    """Exchanges of Celery's remote control (``celery.pidbox``, ``reply.celery.pidbox``) and
    events (``celeryev``): their queues hold no jobs."""
    return name.endswith(".pidbox") or name == "celeryev"


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
