"""kombu's Redis transport with three fixes jobkit needs. Used as Celery's ``broker_transport``.

1. **Poison messages** (measured: one undecodable entry makes the whole worker exit
   with ``Unrecoverable error: JSONDecodeError`` and the entry is gone). `Channel._brpop_read`
   catches what kombu cannot decode or build a message from (before the message enters the
   unacked index); anything that is not a kombu message goes
   to ``jobkit.dlq.<queue>`` byte-for-byte, with the reason, and the worker keeps serving.
2. **Delays without the ETA trap** (kombu#337, celery#2599: a Celery ETA/countdown longer than
   ``visibility_timeout`` runs the task again and again). jobkit never uses Celery's ETA on
   Redis: a message carrying the ``x-jobkit-due`` header is added to the sorted set
   ``jobkit.delayed.<queue>`` (score = due time) instead of the queue's list; the worker moves due
   messages onto the list with one Lua script (ZRANGEBYSCORE + LPUSH + ZREM), every sweep.
   A delayed message is not in kombu's ``unacked`` index while it waits, so it cannot be restored.
3. **Jobs longer than the visibility timeout** are not started again while they run: at every
   sweep the worker refreshes the score of each message it holds unacked in kombu's
   ``unacked_index`` (ZADD XX), so only the messages of a dead worker ever get older than the
   visibility timeout and are restored.

The sweep is kombu's own periodic ``restore_visible`` (every ``unacked_restore_interval`` s).
"""

from __future__ import annotations

import binascii
import logging
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.exceptions import DecodeError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from jobkit_celery._dlq_record import encode_record
from jobkit_celery._names import delayed_name, dlq_name
from jobkit_celery._wire import DUE_HEADER

logger = logging.getLogger("jobkit.celery")


MOVE_DUE = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(items) do
  local nl = string.find(member, '\\n', 1, true)
  if nl then
    redis.call('LPUSH', string.sub(member, 1, nl - 1), string.sub(member, nl + 1))
  end
  redis.call('ZREM', KEYS[1], member)
end
return #items
"""


class _Poison(Exception):
    """Raised while building a kombu message from something that is not one."""


class Message(virtual.Message):
    """kombu's message, raising `_Poison` (before the message is marked unacked) for a payload
    that is not a kombu message."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        try:
            if not isinstance(payload, dict):
                raise TypeError(f"message is JSON {type(payload).__name__}, not an object")
            super().__init__(payload, channel=channel, **kwargs)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            raise _Poison(f"not a kombu message: {type(exc).__name__}: {exc}") from exc


class QoS(kombu_redis.QoS):
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
        super().restore_visible(start=start, num=num, interval=interval)


class Channel(kombu_redis.Channel):
    QoS = QoS
    Message = Message
    _jobkit_keys: dict[tuple[str, ...], list[str]] | None = None

    def _brpop_start(self, timeout: float | None = None) -> None:
        """kombu's, with the BRPOP key list (queues x 10 priority steps) built once."""
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        if self._jobkit_keys is None:
            self._jobkit_keys = {}
        order = tuple(queues)
        keys = self._jobkit_keys.get(order)
        if keys is None:
            keys = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
            self._jobkit_keys[order] = keys
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # type: ignore[assignment]
        command_args = ["BRPOP", *keys, timeout or 0]
        if self.global_keyprefix:
            command_args = self.client._prefix_args(command_args)
        self.client.connection.send_command(*command_args)

    def move_due(self, client: Any, queue: str, now: float, limit: int = 500) -> int:
        """Move the due delayed messages of `queue` onto its lists. Returns how many."""
        script = getattr(self, "_jobkit_move_due", None)
        if script is None:
            script = self._jobkit_move_due = client.register_script(MOVE_DUE)
        return int(script(keys=[delayed_name(queue)], args=[now, limit], client=client))

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        due = (message.get("headers") or {}).get(DUE_HEADER)
        if due is None or float(due) <= time():
            super()._put(queue, message, **kwargs)
            return
        kwargs.pop("_publish_batch", None)
        pri = self._get_message_priority(message, reverse=False)
        member = f"{self._q_for_pri(queue, pri)}\n{dumps(message)}"
        with self.conn_or_acquire() as client:
            client.zadd(delayed_name(queue), {member: float(due)})

    def _dead_letter_raw(self, queue: str, raw: bytes, reason: str) -> None:
        logger.error("dead-lettering an undecodable message on %r: %s", queue, reason)
        record = encode_record(queue=queue, job_id=None, body=raw, reason=reason, deliveries=1)
        with self.conn_or_acquire() as client:
            client.rpush(dlq_name(queue), record)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            raw = item if isinstance(item, bytes) else str(item).encode()
            try:
                payload = loads(bytes_to_str(raw))
            except (ValueError, TypeError, UnicodeDecodeError, DecodeError) as exc:
                self._dead_letter_raw(dest, raw, f"undecodable message: not JSON: {exc}")
                raise Empty() from None
            try:
                self.connection._deliver(payload, dest)
            except _Poison as exc:
                self._dead_letter_raw(dest, raw, f"undecodable message: {exc}")
                raise Empty() from None
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()


class Transport(kombu_redis.Transport):
    Channel = Channel
