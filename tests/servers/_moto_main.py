"""moto's server (``python -m moto.server``) with three SQS hot spots and two races taken out.

moto 5.2.5 answers every attribute read by building the queue's whole attribute dict, which
counts the queue's messages three times (visible, delayed, in flight; a clock read per message):

- `send_message` does it to read ``ContentBasedDeduplication``, once per message;
- `receive_message` does it three times per message it returns, to read
  ``MessageRetentionPeriod`` (through `get_queue_attributes`);
- `get_queue_attributes` with attribute names does it three times per name.

So a queue of N messages costs O(N) per message sent or received: with 10,000 jobs in one queue
an import into SQS ran at about 3 messages/s (bench/migrate_chain.py). Here `send_message`
builds the dict without the three counts (it reads none of them), and the other two build it
once per call. Every answer is what moto itself gives; only its cost changes. Used by
`tests/servers/moto.py` for the tests and benchmarks; real SQS has no such cost.

It also takes out a race: `Queue.delete_message` rebuilds the queue's message list without the
lock `add_message` appends under, so messages sent while a delete rebuilds the list are gone (a
whole SendMessageBatch: "10 of 5,000 jobs lost in sending" in the conformance suite's volume
scenario), and two deletes at once put back what the other removed. Here a delete holds that
lock (tests/sqs/test_moto_server.py). Real SQS does neither; a test server that does fails
correct code.

And one in DynamoDB: a conditional write checks its condition and then stores the item, with
nothing to keep another request thread from writing between the two, so two writers of one
item can both succeed and one write is lost (an event of a job record: 1 run in 60 of
`test_concurrent_writers_of_one_job_lose_no_event` without this, 0 in 100 with it). Real
DynamoDB applies a conditional write atomically; here the backend's writes run one at a time.

Written here rather than upstream: no released moto has it (5.2.5 is the latest).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main
from moto.sqs import models

_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)
_call = threading.local()  # per request thread: .uncounted (bool), .memo (dict or None)


def _uncounted(count: property) -> property:
    def get(queue: Any) -> int:
        return 0 if getattr(_call, "uncounted", False) else int(count.fget(queue))  # type: ignore[misc]

    return property(get)


def _memoized(attributes: property) -> property:
    def get(queue: Any) -> dict[str, Any]:
        memo: dict[int, dict[str, Any]] | None = getattr(_call, "memo", None)
        if memo is None:
            return attributes.fget(queue)  # type: ignore[misc,no-any-return]
        if id(queue) not in memo:
            memo[id(queue)] = attributes.fget(queue)  # type: ignore[misc]
        return memo[id(queue)]

    return property(get)


def _within(flag: str, value: Callable[[Any], object], method: Any) -> Any:
    """`method` with `_call.<flag>` set to `value(what it was)` while it runs."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = getattr(_call, flag, None)
        setattr(_call, flag, value(before))
        try:
            return method(*args, **kwargs)
        finally:
            setattr(_call, flag, before)

    return wrapper


def _holding(method: Any, lock_of: Callable[[Any], Any]) -> Any:
    """`method`, run holding the lock `lock_of(its first argument)` returns."""

    @functools.wraps(method)
    def wrapper(first: Any, *args: Any, **kwargs: Any) -> Any:
        with lock_of(first):
            return method(first, *args, **kwargs)

    return wrapper


def patch() -> None:
    writes = threading.RLock()  # reentrant: a transaction's writes call the others
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        setattr(DynamoDBBackend, name, _holding(getattr(DynamoDBBackend, name), lambda _: writes))
    queue, backend = models.Queue, models.SQSBackend
    # the lock add_message appends under
    queue.delete_message = _holding(queue.delete_message, lambda q: q._messages_lock)  # type: ignore[method-assign]
    for name in _COUNTS:
        setattr(queue, name, _uncounted(getattr(queue, name)))
    queue.attributes = _memoized(queue.__dict__["attributes"])  # type: ignore[method-assign,assignment]
    backend.send_message = _within("uncounted", lambda _: True, backend.send_message)  # type: ignore[method-assign]
    for name in ("receive_message", "get_queue_attributes"):
        # receive_message calls get_queue_attributes per message: one memo for the outer call
        memo = _within("memo", lambda outer: {} if outer is None else outer, getattr(backend, name))
        setattr(backend, name, memo)


if __name__ == "__main__":
    patch()
    main()
