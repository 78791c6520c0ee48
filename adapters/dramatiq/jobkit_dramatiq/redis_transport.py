"""`RedisTransport`: jobkit's message-level transport on Dramatiq's Redis broker layout.

Messages are Dramatiq messages (see `_wire`) stored where Dramatiq's ``RedisBroker`` stores them,
so Dramatiq's tools and a plain ``dramatiq`` worker see the same queues. What jobkit changes
(see `_redis_scripts` for the layout):

- recovery: a worker's lease is its heartbeat, beaten by a thread every heartbeat/5; every
  fetch requeues the messages of workers whose heartbeat is older than the timeout (Dramatiq
  does that on 0.1 % of its commands, after 60 s): a killed worker's messages are back within
  `heartbeat` + one doorbell wait (1/20 of the heartbeat), every time;
- waiting: an idle receive blocks on the queues' doorbells, rung by the push that makes a queue
  non-empty (see `receive`), instead of polling;
- poison: a message is taken with its id, so one that is not a Dramatiq message or carries no
  jobkit envelope reaches jobkit's worker, which dead-letters it with the reason (Dramatiq's
  consumer fails to decode it and leaves it in its ack set for ever);
- dead letters go to Dramatiq's ``Q.XQ`` with a reason next to them, and never expire;
- delays: Dramatiq's delay queue ``Q.DQ`` with an index by due time that the fetch script moves
  from; delivery counts per message, so crash loops count as attempts.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from jobkit import BrokerUnavailable
from jobkit.spi import (
    Capabilities,
    DeadLetter,
    Delivery,
    Message,
    MigrationSupport,
    QueueStats,
    Transport,
    replay_body,
)
from jobkit_dramatiq import _redis_scripts, _wire
from jobkit_dramatiq._heartbeat import Heartbeat
from jobkit_dramatiq.config import STORE_OPTION, DramatiqConfig


def redis_capabilities(config: DramatiqConfig, *, results: bool) -> Capabilities:
    native = "" if config.hardened else " (native defaults)"
    return Capabilities(
        name=f"dramatiq+redis{native}",
        redelivery="heartbeat timeout: a dead worker's messages are requeued by the next fetch",
        redelivery_after=config.heartbeat,
        scheduling_precision=timedelta(seconds=1),
        max_delay=None,
        priorities=1,
        results=results,
        idempotency_keys=results,
        store_option=STORE_OPTION,
        # a message a killed migrator held is requeued with its delivery counted
        migration=MigrationSupport(
            delayed_before_due=False,
            dead_letters=False,
            dedup="marker" if results else "none",
            killed_export_counts=True,
        ),
        survives_broker_restart=config.persistent,  # only a Redis with AOF keeps them
    )


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BrokerUnavailable(f"Redis unreachable while trying to {what}: {exc}") from exc


class RedisTransport(Transport):
    """Thread-safe (redis-py's client is); `clone` shares the client and the heartbeat."""

    def __init__(
        self,
        config: DramatiqConfig,
        *,
        results: bool,
        client: Any = None,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.config = config
        self._results = results
        self._caps = redis_capabilities(config, results=results)  # read on every enqueue
        self._root = client is None
        # redis-py's return types are unions of every reply shape: typed as Any here
        self.client: Any = client or redis.Redis.from_url(
            config.broker_url, socket_connect_timeout=5, socket_timeout=30, health_check_interval=10
        )
        ns = config.namespace
        self._ns = ns
        self._heartbeat = heartbeat or Heartbeat(
            self.client, f"{ns}:__heartbeats__", str(uuid.uuid4()), config.heartbeat / 5
        )
        self._enqueue = self.client.register_script(_redis_scripts.ENQUEUE)
        self._fetch = self.client.register_script(_redis_scripts.FETCH)
        self._ack = self.client.register_script(_redis_scripts.ACK)
        self._release = self.client.register_script(_redis_scripts.RELEASE)
        self._dead_letter = self.client.register_script(_redis_scripts.DEAD_LETTER)
        self._replay = self.client.register_script(_redis_scripts.REPLAY)
        self._purge = self.client.register_script(_redis_scripts.PURGE)
        self._closed = False
        # the longest doorbell wait of one receive (see `receive`); under the socket timeout
        self._block_max = min(config.heartbeat.total_seconds() / 20, 10.0)

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def _key(self, queue: str) -> str:
        return f"{self._ns}:{queue}"

    # -- sending ------------------------------------------------------------------------------

    def send(self, messages: Sequence[Message]) -> None:
        """One script call for the batch: all or nothing. Raises `BrokerUnavailable`."""
        if not messages:
            return
        args: list[Any] = [self._ns]
        for m in messages:
            rid = str(uuid.uuid4())
            if m.delay > timedelta(0):
                eta = _wire.eta_after(m.delay)
                options: dict[str, Any] = {"redis_message_id": rid, "eta": eta}
                queue = f"{m.queue}.DQ"
            else:
                eta, options, queue = 0, {"redis_message_id": rid}, m.queue
            data = _wire.encode(queue=queue, job_id=m.id, body=m.body, options=options, actor=m.job)
            args += [m.queue, rid, data, eta]
        with _translated(f"send {len(messages)} message(s)"):
            self._enqueue(args=args)

    # -- receiving ----------------------------------------------------------------------------

    def receive(
        self, queues: Sequence[str], *, max_messages: int, wait: timedelta, lease: timedelta
    ) -> list[Delivery]:
        """Takes up to `max_messages`; with none there, blocks on the queues' doorbells
        (``NS:Q.bell``, see `_redis_scripts`) until a push rings one, the first delayed message
        is due, or `wait` is over, then takes again. A block lasts at most 1/20 of the
        heartbeat (0.25 s hardened; 10 s at most), so that this worker's fetches still requeue
        dead workers' messages soon after their heartbeat lapses. The lease is the heartbeat,
        not `lease`: see the module docstring."""
        self._heartbeat.start()
        deadline = time.monotonic() + wait.total_seconds()
        got = self._take(queues, max_messages)
        while not got and queues and max_messages > 0 and time.monotonic() < deadline:
            # the bells' last ids first, then look again: a push after that look rings past them
            with _translated("wait for messages"):
                rung, due_in = self._bells(queues)
            got = self._take(queues, max_messages)
            if got:
                break
            block = min(deadline - time.monotonic(), due_in, self._block_max)
            if block > 0:
                with _translated("wait for messages"):
                    self.client.xread(rung, block=max(1, int(block * 1000)))
            got = self._take(queues, max_messages)
        return got

    def _bells(self, queues: Sequence[str]) -> tuple[dict[str, str], float]:
        """({doorbell key: its last id, "0" if none}, seconds until the first delayed message
        of `queues` is due, 0 if one is, inf if none). One round trip."""
        keys = [self._key(queue) for queue in queues]
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.xrevrange(f"{key}.bell", count=1)
            pipe.zrange(f"{key}.DQ.due", 0, 0, withscores=True)
        replies = pipe.execute()
        rung: dict[str, str] = {}
        first_due = float("inf")
        for key, last, due in zip(keys, replies[::2], replies[1::2], strict=True):
            rung[f"{key}.bell"] = last[0][0].decode() if last else "0"
            if due:
                first_due = min(first_due, due[0][1] / 1000)
        return rung, max(0.0, first_due - time.time())

    def _take(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        c = self.config
        maintain = c.maintenance_chance >= 1 or uuid.uuid4().int % 1_000_000 < (
            c.maintenance_chance * 1_000_000
        )
        worker = self._heartbeat.worker
        args: list[Any] = [
            self._ns,
            int(time.time() * 1000),
            worker,
            int(c.heartbeat.total_seconds() * 1000),
            "1" if maintain else "0",
            max(max_messages, 0),
            *queues,
        ]
        with _translated("receive messages"):
            flat = self._fetch(args=args)
        out: list[Delivery] = []
        for i in range(0, len(flat), 4):
            queue, rid, data, count = (
                flat[i].decode(),
                flat[i + 1].decode(),
                flat[i + 2],
                flat[i + 3],
            )
            if not c.hardened and _wire.decode(data) is None:
                continue  # Dramatiq's consumer: an undecodable message stays in the ack set
            out.append(
                Delivery(
                    queue=queue,
                    id=_wire.message_id(data, rid),
                    body=_wire.envelope_of(data),
                    deliveries=int(count),
                    receipt=f"{worker}|{rid}",
                    native=data,
                )
            )
        return out

    def peek(self, queues: Sequence[str], *, limit: int = 100) -> list[bytes]:
        out: list[bytes] = []
        with _translated("look at waiting messages"):
            for queue in queues:
                key = self._key(queue)
                ids = self.client.lrange(key, 0, max(limit - len(out), 0) - 1)
                if ids:
                    out += [
                        _wire.envelope_of(d) for d in self.client.hmget(f"{key}.msgs", ids) if d
                    ]
                if len(out) >= limit:
                    break
        return out[:limit]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        args: list[Any] = [self._ns]
        for d in deliveries:
            worker, rid = _receipt(d)
            args += [worker, d.queue, rid]
        with _translated(f"ack {len(deliveries)} message(s)"):
            self._ack(args=args)

    def release(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._do_release(delivery, delay, uncount=False)

    def release_uncounted(self, delivery: Delivery, *, delay: timedelta = timedelta(0)) -> None:
        self._do_release(delivery, delay, uncount=True)

    def _do_release(self, delivery: Delivery, delay: timedelta, *, uncount: bool) -> None:
        worker, rid = _receipt(delivery)
        eta = 0
        data = b""
        if delay > timedelta(0):
            eta = _wire.eta_after(delay)
            raw = delivery.native if isinstance(delivery.native, bytes) else delivery.body
            data = _wire.with_options(raw, eta=eta)
        with _translated(f"release {delivery.id}"):
            self._release(args=[self._ns, worker, delivery.queue, rid, eta, int(uncount), data])

    def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        worker, rid = _receipt(delivery)
        why = json.dumps({"reason": reason, "deliveries": delivery.deliveries})
        now = int(time.time() * 1000)
        with _translated(f"dead-letter {delivery.id}"):
            self._dead_letter(args=[self._ns, worker, delivery.queue, rid, now, why])

    def extend(self, delivery: Delivery, *, lease: timedelta) -> None:
        """The lease is the heartbeat: one beat now (the heartbeat thread keeps it up)."""
        self._heartbeat.start()
        with _translated(f"extend the lease of {delivery.id}"):
            self._heartbeat.beat()

    # -- dead letters and stats ---------------------------------------------------------------

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        key = self._key(queue)
        with _translated(f"list the dead letters of {queue}"):
            entries = self.client.zrange(f"{key}.XQ", 0, limit - 1, withscores=True)
            if not entries:
                return []
            ids = [rid for rid, _ in entries]
            datas = self.client.hmget(f"{key}.XQ.msgs", ids)
            whys = self.client.hmget(f"{key}.XQ.why", ids)
        out = []
        for (rid, score), data, why in zip(entries, datas, whys, strict=True):
            info = _why(why)
            raw = data or b""
            out.append(
                DeadLetter(
                    queue=queue,
                    id=_wire.message_id(raw, rid.decode()),
                    body=_wire.envelope_of(raw),
                    reason=str(info.get("reason", "dead-lettered by Dramatiq")),
                    dead_at=datetime.fromtimestamp(score / 1000, UTC),
                    deliveries=int(info.get("deliveries", 0)),
                )
            )
        return out

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        """Each dead letter moves back in one atomic step (attempts reset)."""
        key = self._key(queue)
        wanted = set(ids) if ids is not None else None
        moved = 0
        with _translated(f"replay the dead letters of {queue}"):
            for rid in self.client.zrange(f"{key}.XQ", 0, -1):
                data = self.client.hget(f"{key}.XQ.msgs", rid)
                if data is None:
                    continue
                job_id = _wire.message_id(data, rid.decode())
                if wanted is not None and job_id not in wanted:
                    continue
                fresh = _wire.with_envelope(data, replay_body(_wire.envelope_of(data)))
                fresh = _wire.with_options(fresh, eta=None)
                moved += int(self._replay(args=[self._ns, queue, rid, fresh]))
        return moved

    def purge(self, queue: str) -> int:
        with _translated(f"purge the dead letters of {queue}"):
            return int(self._purge(args=[self._ns, queue]))

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        with _translated("read queue statistics"):
            names = list(queues) if queues is not None else self._known_queues()
            out = []
            for queue in names:
                key = self._key(queue)
                pipe = self.client.pipeline(transaction=False)
                pipe.hlen(f"{key}.msgs")
                pipe.zcard(f"{key}.DQ.due")
                pipe.zcard(f"{key}.XQ")
                stored, delayed, dead = pipe.execute()
                in_flight = 0
                for ack_key in self.client.scan_iter(match=f"{self._ns}:__acks__.*.{queue}"):
                    in_flight += int(self.client.scard(ack_key))
                out.append(
                    QueueStats(
                        queue=queue,
                        ready=max(int(stored) - in_flight, 0),
                        in_flight=in_flight,
                        delayed=int(delayed),
                        dead=int(dead),
                    )
                )
        return out

    def _known_queues(self) -> list[str]:
        prefix = f"{self._ns}:"
        found: set[str] = set()
        for suffix in (".msgs", ".DQ.due", ".XQ"):
            for key in self.client.scan_iter(match=f"{prefix}*{suffix}"):
                name = key.decode()[len(prefix) : -len(suffix)]
                if not name.endswith((".DQ", ".XQ")) and not name.startswith("__"):
                    found.add(name)
        return sorted(found)

    # -- lifecycle ----------------------------------------------------------------------------

    def clone(self) -> RedisTransport:
        return RedisTransport(
            self.config, results=self._results, client=self.client, heartbeat=self._heartbeat
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._root:
            self._heartbeat.stop()
            self.client.close()


def _receipt(delivery: Delivery) -> tuple[str, str]:
    worker, _, rid = delivery.receipt.partition("|")
    return worker, rid


def _why(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"reason": raw.decode(errors="replace")}
    return value if isinstance(value, dict) else {}
