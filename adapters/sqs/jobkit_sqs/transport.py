"""`SqsTransport`: jobkit's leased-delivery `Transport` on Amazon SQS.

The queue semantics (send, receive, settle, delays beyond 15 minutes) are `SqsQueues` in
`jobkit_sqs._base`; this layer adds what operations need: the migration primitives (see
`jobkit_sqs.migration`, `jobkit_sqs.migration_dead`), the dead-letter queue (`jobkit_sqs.dlq`)
and the counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from jobkit import JobkitError
from jobkit.spi import (
    DeadLetter,
    Delivery,
    ExportedJob,
    QueueStats,
    message_of,
    stays,
)
from jobkit_sqs import batches, migration, migration_dead
from jobkit_sqs._base import SqsQueues
from jobkit_sqs._capabilities import capabilities_for
from jobkit_sqs.client import translated

__all__ = ["SqsTransport", "capabilities_for"]


class SqsTransport(SqsQueues):
    """One thread at a time; `clone` gives each thread its own client."""

    def clone(self) -> SqsTransport:
        return SqsTransport(
            self.config, results=self._results, directory=self._queues, store=self._store
        )

    # -- migration (see `jobkit_sqs.migration`) -----------------------------------------------

    def export(
        self,
        queues: Sequence[str],
        *,
        max_messages: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        """Due messages (received), then indexed delayed ones due after the lease, then (with
        `include_dead`) dead letters; each under an export lease of `lease`."""
        out: list[ExportedJob] = []
        while len(out) < max_messages:  # receive gives 10 at most per call
            got = super().export(
                queues, max_messages=max_messages - len(out), lease=lease, include_dead=False
            )
            if not got:
                break
            if self._store is not None:
                got = migration.uncount_export_receives(self._store, got)
            out.extend(got)
        for queue in queues:
            if self._index is not None and len(out) < max_messages:
                out.extend(self._index.export(queue, limit=max_messages - len(out), lease=lease))
            if include_dead and len(out) < max_messages:
                pair = self._queues.lookup(self._client, queue)
                if pair is not None:
                    out.extend(
                        migration_dead.export_dead(
                            self._client,
                            self.config,
                            queue,
                            pair.dlq_url,
                            limit=max_messages - len(out),
                            lease=lease,
                        )
                    )
        return out

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        received = [job for job in jobs if isinstance(job.native, Delivery)]
        super().commit_export(received)
        if self._index is not None:
            self._index.commit(jobs)
        migration_dead.delete_dead(
            self._client,
            self.config,
            [job.native for job in jobs if isinstance(job.native, migration_dead.DeadHold)],
        )
        return []

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        super().release_export(jobs)
        migration_dead.release_holds(
            self._client,
            self.config,
            [
                job.native
                for job in jobs
                if isinstance(job.native, migration.IndexHold | migration_dead.DeadHold)
            ],
        )

    def import_messages(self, jobs: Sequence[ExportedJob]) -> set[str]:
        """Live jobs are sent (delayed ones indexed); dead letters go to the DLQ with their
        reason. Looks nothing up by id (the backend's store markers do). Delayed jobs are
        indexed before they are sent, with their stays (see `_send`)."""
        live = [job for job in jobs if not job.dead]
        ids = [job.id for job in live if job.delay > timedelta(0)]
        current = stays(self._store, ids) if self._store is not None and ids else {}
        self._send([message_of(job) for job in live], stays=current)
        dead: dict[str, list[ExportedJob]] = {}
        for job in jobs:
            if job.dead:
                dead.setdefault(job.queue, []).append(job)
        for queue, letters in dead.items():
            pair = self._queues.ensure(self._client, queue)
            _, failed = batches.send(
                self._client,
                self.config,
                pair.dlq_url,
                migration_dead.dead_entries(letters),
                f"import dead letters to {queue!r}",
            )
            if failed:
                raise JobkitError(
                    f"SQS refused {len(failed)} of {len(letters)} dead letters for {queue!r}: "
                    f"{failed[0][1]}"
                )
        return set()

    # -- dead letters and stats --------------------------------------------------------------

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self._dlq.list_letters(queue, limit=limit)

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        return self._dlq.replay(queue, ids=ids)

    def purge(self, queue: str) -> int:
        return self._dlq.purge(queue)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """From ApproximateNumberOfMessages(/NotVisible/Delayed): approximate on real SQS. A
        message released with a delay is in flight to SQS (invisible), not delayed. Messages
        migrated away before they were due (see `jobkit_sqs.migration`) are not counted; those
        that may or may not be such copies are counted in `delayed` and in `stale`."""
        names = list(queues) if queues is not None else self._queues.known(self._client)
        out = []
        for queue in names:
            pair = self._queues.lookup(self._client, queue)
            if pair is None:
                out.append(QueueStats(queue=queue, ready=0, in_flight=0, delayed=0, dead=0))
                continue
            main = self._counts(pair.url)
            dead = self._counts(pair.dlq_url)
            gone = self._index.departed(queue) if self._index is not None else {}
            delayed = max(0, main[2] - gone.get("delayed", 0))
            out.append(
                QueueStats(
                    queue=queue,
                    ready=main[0],
                    in_flight=max(0, main[1] - gone.get("leased", 0)),
                    delayed=delayed,
                    dead=sum(dead),
                    stale=min(gone.get("maybe", 0), max(0, delayed - gone.get("indexed", 0))),
                )
            )
        return out

    def _counts(self, url: str) -> tuple[int, int, int]:
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        with translated("read SQS queue attributes", self.config):
            attrs = self._client.get().get_queue_attributes(QueueUrl=url, AttributeNames=names)
        values = attrs.get("Attributes", {})
        ready, flight, delayed = (int(values.get(name, 0)) for name in names)
        return ready, flight, delayed
