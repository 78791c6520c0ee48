"""kombu's Redis transport with four fixes jobkit needs. Used as Celery's ``broker_transport``.

1. **No message lost to a killed worker.** kombu takes a message with BRPOP (it leaves the list
   at once) and records it in its ``unacked`` hash and ``unacked_index`` (which
   ``restore_visible`` uses to redeliver a dead worker's messages) only in a second round trip;
   a worker killed in between (measured: 1-5 of 5,000 jobs under 3 SIGKILLs) lost the message.
   Here the worker takes messages with one Lua script (`jobkit_celery._redis_scripts.POP`) that
   pops and records in one atomic step, so a message is always in exactly one of a queue list,
   the delayed set, or the unacked hash+index. ``QoS.append`` then skips its (same) write. An
   idle worker blocks on XREAD of the queues' doorbell streams, from the last ids the script
   saw, so no push is missed; every push of this transport (``_put``, the delayed-message mover)
   that makes a list non-empty rings the doorbell (`_ring_after_push`), and the wait times
   out after ``brpop_timeout`` (1 s) so a message pushed without a ring (kombu's restores, a
   DLQ replay, and the pushes onto a list such a message made non-empty) is taken within about
   a second.
2. **Poison messages** (measured: one undecodable entry makes the whole worker exit
   with ``Unrecoverable error: JSONDecodeError`` and the entry is gone). An entry the pop
   script cannot read as a kombu message (Redis's cjson: no JSON object with a delivery tag and
   delivery info) stays on its list, and the worker moves it to ``jobkit.dlq.<queue>``
   byte-for-byte, with the reason, in one WATCH/MULTI transaction. One the script took but
   kombu cannot build a message from goes there in the transaction that drops it from the
   unacked index. Either way it is never only in the worker's memory, and the worker keeps
   serving.
3. **Delays without the ETA trap** (kombu#337, celery#2599: a Celery ETA/countdown longer than
   ``visibility_timeout`` runs the task again and again). jobkit never uses Celery's ETA on
   Redis: a message carrying the ``x-jobkit-due`` header is added to the sorted set
   ``jobkit.delayed.<queue>`` (score = due time) instead of the queue's list; the worker moves due
   messages onto the list with one Lua script (ZRANGEBYSCORE + LPUSH + ZREM), every sweep.
   A delayed message is not in kombu's ``unacked`` index while it waits, so it cannot be restored.
4. **Jobs longer than the visibility timeout** are not started again while they run: at every
   sweep the worker refreshes the score of each message it holds unacked in kombu's
   ``unacked_index`` (ZADD XX), so only the messages of a dead worker ever get older than the
   visibility timeout and are restored.

The sweep is kombu's own periodic ``restore_visible`` (every ``unacked_restore_interval`` s).

This subclasses private kombu methods (``_brpop_start``, ``_brpop_read``, ``_put``, the QoS
indices); it is tested on the lowest and highest kombu of `_versions.KOMBU`, and the Celery app
is not built on any other (`_versions.check_versions`). Attributes only kombu 5.7 has are read
with ``getattr``.
"""

from __future__ import annotations

import binascii
import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.exceptions import DecodeError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from redis.exceptions import NoScriptError

from jobkit_celery._dlq_record import encode_record
from jobkit_celery._names import bell_name, delayed_name, dlq_name
from jobkit_celery._redis_scripts import BELL_MAXLEN, MOVE_DUE, POP
from jobkit_celery._wire import DUE_HEADER

logger = logging.getLogger(f"jobkit.celery.{__name__.rpartition('.')[2]}")


_POP_SHA = hashlib.sha1(POP.encode()).hexdigest()


class _Poison(Exception):
    """Raised while building a kombu message from something that is not one."""


class Message(virtual.Message):
    """kombu's message, raising `_Poison` for a payload that is not a kombu message."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            if not isinstance(payload, dict):
                raise TypeError(f"message is JSON {type(payload).__name__}, not an object")
            super().__init__(payload, channel=channel, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise _Poison(f"not a kombu message: {type(exc).__name__}: {exc}") from exc


# kombu 5.7 sweeps unacked messages every ``unacked_restore_interval`` s; older ones every 10 s.
_KOMBU_SWEEP_OPTION = hasattr(kombu_redis.Channel, "unacked_restore_interval")


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's, without its Redis write for a message the pop script already recorded."""
        claimed = self.channel._jobkit_claimed
        if delivery_tag in claimed:
            claimed.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)

    def restore_visible(self, start: int = 0, num: int = 10, interval: int = 10) -> None:
        channel: Channel = self.channel
        with channel.conn_or_acquire() as client:
            now = time()
            if self._delivered:
                # Heartbeat: messages this worker still holds are not older than now.
                client.zadd(
                    self.unacked_index_key, {tag: now for tag in list(self._delivered)}, xx=True
                )
            for queue in list(channel.active_queues):
                channel.move_due(client, queue, now)
        # Scan on every call: the cadence is the sweep's period (kombu before 5.7 passes its
        # default throttle of 10 here, which would scan on every 10th sweep only).
        super().restore_visible(start=start, num=num, interval=1)


def _ring(pipe: Any, queue: str) -> None:
    """Queue a touch of `queue`'s doorbell on `pipe` (a redis-py pipeline or client)."""
    pipe.xadd(bell_name(queue), {"r": "1"}, maxlen=BELL_MAXLEN, approximate=True)


def _ring_after_push(client: Any, queue: str) -> None:
    """Ring `queue`'s doorbell after a push that made one of its lists non-empty.

    Not atomic with the push, and need not be: a worker blocks on the doorbell only from the
    last ids its `POP` saw with every list empty, so this ring (after the push) is newer than
    those and wakes it; had the `POP` run after the push, it took the message. A ring that
    fails leaves the message stored (the enqueue succeeded: raising would make the caller send
    it twice) and a blocked worker finds it when its wait times out (``brpop_timeout``, 1 s).
    One LPUSH and, for the push onto an empty list only, one XADD cost less than a script call
    per message (about 10 us of client CPU and more of Redis's)."""
    try:
        _ring(client, queue)
    except Exception as exc:  # a missed wake-up delays a job, never loses it
        logger.warning("could not ring the doorbell of %r after a push: %s", queue, exc)


class Channel(kombu_redis.Channel):
    """kombu's Redis channel taking messages with the `POP` script instead of BRPOP.

    The consuming side is a two-state machine on kombu's BRPOP connection (driven by kombu's
    poller exactly like BRPOP): ``_jobkit_bells is None`` -> send the pop script; it returns a
    message, or the doorbells' last ids -> send ``XREAD BLOCK brpop_timeout`` from those ids;
    its reply (a ring or the timeout) -> send the pop script again. Not thread-safe (neither is
    kombu's channel).
    """

    QoS = QoS
    Message = Message
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "jobkit_poll")  # type: ignore[assignment]
    jobkit_poll: float = 1.0  # s: the longest wait of one receive (the worker's --poll)
    _jobkit_keys: dict[tuple[str, ...], tuple[list[str], list[str]]] | None = None
    _jobkit_bells: dict[str, str] | None = None
    _jobkit_sent: str = "EVALSHA"
    _jobkit_client: tuple[Any, Any] | None = None  # (kombu's pool, a client on it)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Delivery tags the pop script recorded as unacked whose QoS.append is still to come.
        self._jobkit_claimed: set[str] = set()
        self._jobkit_sent_bells: list[str] = []  # the doorbells of the last pop script sent
        super().__init__(*args, **kwargs)
        # kombu >= 5.7 judges the health of a waiting connection by brpop_timeout
        self.brpop_timeout = self.jobkit_poll
        if self.global_keyprefix:
            raise ValueError(
                "jobkit's Redis transport does not support kombu's global_keyprefix: "
                "use a Redis database of its own instead (the db number in the URL)"
            )

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """kombu's, but without building a new redis-py client for every command (kombu does,
        and a client's construction costs about as much as the command's round trip on a
        local Redis): one client per connection pool is kept. redis-py clients are
        thread-safe; a fork replaces the pool (kombu's ``_after_fork``), and so the client."""
        if client:
            yield client
            return
        pool = self.pool
        kept = self._jobkit_client
        if kept is None or kept[0] is not pool:
            kept = self._jobkit_client = (pool, self._create_client())
        yield kept[1]

    def _keys_for(self, queues: list[str]) -> tuple[list[str], list[str]]:
        """The list keys (queues x priority steps, in BRPOP's order) and the doorbells."""
        if self._jobkit_keys is None:
            self._jobkit_keys = {}
        order = tuple(queues)
        keys = self._jobkit_keys.get(order)
        if keys is None:
            lists = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
            keys = self._jobkit_keys[order] = (lists, [bell_name(q) for q in queues])
        return keys

    def _brpop_start(self, timeout: float | None = None) -> None:
        """Send the pop script, or (when the last one found every list empty) the doorbell wait."""
        if timeout is None:
            timeout = self.jobkit_poll
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        lists, bells = self._keys_for(queues)
        self._jobkit_sent_bells = bells
        connection = self.client.connection
        self._in_poll = connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]  # kombu >= 5.7: health
        seen = self._jobkit_bells
        if seen is not None:
            self._jobkit_sent = "XREAD"
            block_ms = max(1, int((timeout or 1) * 1000))
            ids = [seen.get(bell, "0-0") for bell in bells]
            connection.send_command("XREAD", "BLOCK", block_ms, "STREAMS", *bells, *ids)
            return
        self._jobkit_sent = "EVALSHA"
        keys = [*lists, *bells, self.unacked_key, self.unacked_index_key]
        connection.send_command("EVALSHA", _POP_SHA, len(keys), *keys, len(lists), repr(time()))

    def move_due(self, client: Any, queue: str, now: float, limit: int = 500) -> int:
        """Move the due delayed messages of `queue` onto its lists. Returns how many."""
        script = getattr(self, "_jobkit_move_due", None)
        if script is None:
            script = self._jobkit_move_due = client.register_script(MOVE_DUE)
        keys = [delayed_name(queue), bell_name(queue)]
        return int(script(keys=keys, args=[now, limit, BELL_MAXLEN], client=client))

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        due = (message.get("headers") or {}).get(DUE_HEADER)
        if due is None or float(due) <= time():
            batch = kwargs.get("_publish_batch")
            expires = getattr(self, "_expires", None)  # kombu >= 5.7: queues with x-expires
            if batch is not None or (expires and queue in expires):
                super()._put(queue, message, **kwargs)
                if batch is not None:
                    batch.add("xadd", bell_name(queue), {"r": "1"}, "*", BELL_MAXLEN, True)
                else:
                    with self.conn_or_acquire() as client:
                        _ring(client, queue)
                return
            pri = self._get_message_priority(message, reverse=False)
            with self.conn_or_acquire() as client:
                if client.lpush(self._q_for_pri(queue, pri), dumps(message)) == 1:
                    _ring_after_push(client, queue)
            return
        kwargs.pop("_publish_batch", None)
        pri = self._get_message_priority(message, reverse=False)
        member = f"{self._q_for_pri(queue, pri)}\n{dumps(message)}"
        with self.conn_or_acquire() as client:
            client.zadd(delayed_name(queue), {member: float(due)})

    def _dead_letter_raw(self, queue: str, raw: bytes, reason: str, tag: str) -> None:
        """Dead-letter `raw`, dropping `tag` from the unacked index in the same transaction."""
        logger.error("dead-lettering an undecodable message on %r: %s", queue, reason)
        record = encode_record(queue=queue, job_id=None, body=raw, reason=reason, deliveries=1)
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.rpush(dlq_name(queue), record)
            pipe.zrem(self.unacked_index_key, tag)
            pipe.hdel(self.unacked_key, tag)
            pipe.execute()

    def _brpop_read(self, **options: Any) -> bool:
        try:
            sent = self._jobkit_sent
            try:
                reply = self.client.parse_response(self.client.connection, sent, **options)
            except NoScriptError:
                self.client.script_load(POP)  # the server lost its script cache (a restart)
                raise Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if sent == "XREAD":
                self._jobkit_bells = None  # rung, or timed out: look at the lists again
                raise Empty()
            if not reply or int(reply[0]) == 0:
                ids = [bytes_to_str(i) for i in (reply or [0])[1:]]
                self._jobkit_bells = dict(zip(self._jobkit_sent_bells, ids, strict=False))
                raise Empty()
            self._jobkit_bells = None
            if int(reply[0]) == 2:
                self._dead_letter_head(reply[1], reply[2])
                raise Empty()
            _, dest, item, tag = reply
            self._deliver_popped(dest, item, bytes_to_str(tag))
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            flush_reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.7
            if flush_reauth is not None:
                flush_reauth()

    def _dead_letter_head(self, key: Any, item: Any) -> None:
        """Move `item`, the next entry of list `key` (not a kombu message), to the DLQ in one
        transaction; nothing if the list changed meanwhile (the next pop looks again)."""
        key = bytes_to_str(key)
        queue = key.rsplit(self.sep, 1)[0]
        raw = item if isinstance(item, bytes) else str(item).encode()
        try:
            loads(bytes_to_str(raw))
        except (ValueError, TypeError, UnicodeDecodeError, DecodeError) as exc:
            reason = f"undecodable message: not JSON: {exc}"
        else:
            reason = "undecodable message: not a kombu message (no delivery tag or delivery info)"
        logger.error("dead-lettering an undecodable message on %r: %s", queue, reason)
        record = encode_record(queue=queue, job_id=None, body=raw, reason=reason, deliveries=1)

        def move(pipe: Any) -> None:
            if pipe.lindex(key, -1) != raw:
                return
            pipe.multi()
            pipe.rpop(key)
            pipe.rpush(dlq_name(queue), record)

        with self.conn_or_acquire() as client:
            client.transaction(move, key)

    def _deliver_popped(self, dest_key: Any, item: Any, tag: str) -> None:
        """Hand a popped message to kombu (its tag is already recorded unacked)."""
        dest = bytes_to_str(dest_key).rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(dest)
        raw = item if isinstance(item, bytes) else str(item).encode()
        try:
            payload = loads(bytes_to_str(raw))
        except (ValueError, TypeError, UnicodeDecodeError, DecodeError) as exc:
            self._dead_letter_raw(dest, raw, f"undecodable message: not JSON: {exc}", tag)
            raise Empty() from None
        self._jobkit_claimed.add(tag)
        try:
            self.connection._deliver(payload, dest)
        except _Poison as exc:
            self._jobkit_claimed.discard(tag)
            self._dead_letter_raw(dest, raw, f"undecodable message: {exc}", tag)
            raise Empty() from None
        except BaseException:
            # Left in the unacked index: restore_visible redelivers it after the timeout.
            self._jobkit_claimed.discard(tag)
            raise
        if tag in self._jobkit_claimed:
            # Delivered without QoS.append: a no_ack consumer, for which delivery is the ack.
            self._jobkit_claimed.discard(tag)
            self.qos._remove_from_indices(tag).execute()


class Transport(kombu_redis.Transport):
    Channel = Channel

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """kombu's, plus, on a kombu without ``unacked_restore_interval`` (before 5.7, whose
        sweep runs every 10 s and scans on every 10th run), a sweep every
        ``unacked_restore_interval`` s: it is also the heartbeat of running jobs and the delay
        mover, so it must run as often as jobkit's settings say on every supported kombu."""
        super().register_with_event_loop(connection, loop)
        if _KOMBU_SWEEP_OPTION:
            return
        cycle: Any = self.cycle  # kombu's MultiChannelPoller
        old = getattr(cycle, "_jobkit_restore_tref", None)
        if old is not None:  # registered again after a reconnection
            old.cancel()
        every = connection.client.transport_options.get("unacked_restore_interval", 10)
        cycle._jobkit_restore_tref = loop.call_repeatedly(every, cycle.maybe_restore_messages)
