"""The embedded default backend: jobs in one SQLite file, shared by the processes of one host.

URL: ``sqlite:///relative/path.db`` (relative to the current directory) or
``sqlite:////absolute/path.db``, with options ``?lease=30`` (seconds a delivery stays invisible
unless extended; default 30) and ``?synchronous=normal|full`` (default normal; see
`SqliteTransport` for what each risks). Several worker processes may share one file.

Schema (version 1, kept in ``PRAGMA user_version``; defined in `jobkit.sqlite._schema`). Readers
that bypass the transport, such as the conformance suite's probe, may rely on it:

``jobkit_messages``: one row per message, live or dead.

- ``seq`` INTEGER PRIMARY KEY: send order; FIFO within a priority.
- ``queue`` TEXT, ``id`` TEXT (the job id; not unique: a message sent twice has two rows),
  ``body`` BLOB (the encoded envelope, unchanged), ``priority`` INTEGER 0..9 (higher first).
- ``state`` TEXT: ``ready`` (deliverable), ``delayed`` (not before ``due``), ``leased``
  (delivered; invisible until ``due``), ``dead`` (in the queue's dead-letter queue).
  A ``delayed`` or ``leased`` row whose ``due`` has passed is deliverable: it is switched to
  ``ready`` lazily, by the next receive.
- ``due`` REAL, Unix seconds: when a delayed row becomes deliverable, when a lease ends, or
  (for ``dead``) when the row was dead-lettered.
- ``deliveries`` INTEGER: times delivered (reset to 0 by replay).
- ``token`` TEXT: the current lease's random token (receipts are ``"<seq>:<token>"``); NULL
  once released or dead-lettered.
- ``dedup_key`` TEXT (the idempotency key, informational), ``enqueued_at`` REAL (Unix seconds),
  ``reason`` TEXT (why it was dead-lettered).
- Indexes: ``(queue, state, priority DESC, seq)`` for receive, ``(queue, state, due)`` for
  due rows, dead letters and stats.

``jobkit_jobs``: one row per job with recorded events: ``id`` TEXT PRIMARY KEY, ``job`` TEXT,
``state`` TEXT (a `jobkit.JobState` value), ``attempts`` INTEGER, ``errors`` TEXT (JSON list of
``{"attempt", "error", "at"}``), ``result`` TEXT (JSON), ``idempotency_key`` TEXT,
``updated_at`` TEXT (ISO 8601).

``jobkit_done``: ``key`` TEXT PRIMARY KEY (from `jobkit.dedup_key`), ``job_id`` TEXT, ``at``
TEXT (ISO 8601): the keys whose job has succeeded.
"""

from __future__ import annotations

from jobkit.sqlite._schema import SCHEMA_VERSION
from jobkit.sqlite._url import backend_from_url, parse_url
from jobkit.sqlite.store import SqliteJobStore
from jobkit.sqlite.transport import SqliteTransport

__all__ = [
    "SCHEMA_VERSION",
    "SqliteJobStore",
    "SqliteTransport",
    "backend_from_url",
    "parse_url",
]
