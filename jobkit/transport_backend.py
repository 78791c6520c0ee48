"""`TransportBackend`: a full job backend over any message-level `Transport`.

Retries, backoff, dead letters, time limits, idempotency and graceful shutdown all come from
jobkit's own worker (`jobkit.worker`), so every transport gets the same semantics.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta

from jobkit.backend import Backend, WorkerOptions, unknown_job_problems
from jobkit.capabilities import Capabilities
from jobkit.clock import Clock, SystemClock
from jobkit.envelope import Envelope, decode, salvage
from jobkit.errors import SerializationError, UnsupportedFeature
from jobkit.job import JobSet
from jobkit.markers import marked, marker_event, record_departures, stays
from jobkit.records import DeadLetter, ExportedJob, ImportOutcome, JobRecord, Message, QueueStats
from jobkit.store import JobStore
from jobkit.transport import Transport


def message_for(envelope: Envelope, body: bytes, now_delay: timedelta) -> Message:
    return Message(
        queue=envelope.queue,
        body=body,
        id=envelope.id,
        delay=max(now_delay, timedelta(0)),
        priority=envelope.priority,
        dedup_key=envelope.idempotency_key,
        job=envelope.job,
    )


class TransportBackend(Backend):
    """Thread-safe if the transport and store are (the worker clones the transport per thread).

    `transport` and `store` are public: probes, tests and wrappers may use them directly.
    """

    def __init__(
        self,
        transport: Transport,
        store: JobStore,
        *,
        clock: Clock | None = None,
        default_lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.transport = transport
        self.store = store
        self.clock = clock or SystemClock()
        self.default_lease = default_lease

    @property
    def capabilities(self) -> Capabilities:
        return self.transport.capabilities

    def send(self, envelopes: Sequence[tuple[Envelope, bytes]]) -> None:
        now = self.clock.now()
        self.transport.send(
            [
                message_for(env, body, (env.not_before - now) if env.not_before else timedelta(0))
                for env, body in envelopes
            ]
        )

    def job_record(self, job_id: str) -> JobRecord | None:
        """The store's record. Raises `UnsupportedFeature` when the store is not shared
        (`capabilities.results` is False): another process's worker records there."""
        caps = self.capabilities
        if not caps.results:
            raise UnsupportedFeature(
                asked=f"the record of job {job_id}",
                supported=f"{caps.name} keeps no job records another process can read",
                change=caps.without_store("job states and results", "Do not ask for them"),
            )
        return self.store.get(job_id)

    def run_worker(self, app: JobSet, options: WorkerOptions) -> None:
        from jobkit.worker.supervisor import Worker

        Worker(app, self, options).run()

    def dead_letters(self, queue: str, *, limit: int = 100) -> list[DeadLetter]:
        return self.transport.dead_letters(queue, limit=limit)

    def replay(self, queue: str, *, ids: Sequence[str] | None = None) -> int:
        return self.transport.replay(queue, ids=ids)

    def purge(self, queue: str) -> int:
        return self.transport.purge(queue)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        return self.transport.stats(queues)

    # -- migration: the transport's primitives, made idempotent with markers in the store -----

    def export_jobs(
        self,
        queues: Sequence[str],
        *,
        limit: int,
        lease: timedelta,
        include_dead: bool = False,
    ) -> list[ExportedJob]:
        return self.transport.export(
            queues, max_messages=limit, lease=lease, include_dead=include_dead
        )

    def import_jobs(self, jobs: Sequence[ExportedJob]) -> ImportOutcome:
        """A transport that looks ids up natively (`MigrationSupport.dedup == "native"`) skips
        what it has in the same transaction as the insert. Otherwise jobs marked as imported in
        the store (`migration_marker`) are skipped, the rest sent, then marked; a kill between
        the send and the marks: see `MigrationSupport.dedup`.

        Natively, a job imported, run and acked before a re-run is sent again by the re-run;
        the worker then acks it without running it (its key is done in the store)."""
        if self._native_dedup():
            skipped = self.transport.import_messages(jobs) if jobs else set()
            return ImportOutcome(
                copied=frozenset(job.id for job in jobs) - skipped, skipped=frozenset(skipped)
            )
        current = stays(self.store, [job.id for job in jobs])
        already = marked(self.store, [job.id for job in jobs], current)
        fresh = [job for job in jobs if job.id not in already]
        native = self.transport.import_messages(fresh) if fresh else set()
        now = self.clock.now()
        self.store.record(
            [
                marker_event(job.id, salvage(job.body).job or "", now, current[job.id])
                for job in fresh
            ]
        )
        return ImportOutcome(
            copied=frozenset(job.id for job in fresh if job.id not in native),
            skipped=frozenset(already | native),
        )

    def present_jobs(self, ids: Sequence[str]) -> set[str]:
        """Natively present, else (a job that ran here since its import) recorded in the
        store; without native lookups, marked in the store."""
        native = self.transport.present(ids) or set()
        rest = [i for i in ids if i not in native]
        if self._native_dedup():
            return native | {i for i in rest if self.store.get(i) is not None}
        return native | marked(self.store, rest)

    def _native_dedup(self) -> bool:
        support = self.capabilities.migration
        return support is not None and support.dedup == "native"

    def commit_export(self, jobs: Sequence[ExportedJob]) -> list[str]:
        """Without native lookups, the jobs' departures are recorded first (see
        `jobkit.markers`), so that a job that comes back later is not taken for a copy."""
        if not self._native_dedup():
            record_departures(self.store, [job.id for job in jobs], self.clock.now())
        return self.transport.commit_export(jobs)

    def release_export(self, jobs: Sequence[ExportedJob]) -> None:
        self.transport.release_export(jobs)

    def check(self, app: JobSet) -> list[str]:
        problems = self._waiting_unknown_jobs(app)
        caps = self.capabilities
        for job in app.jobs.values():
            if job.time_limit is not None and not caps.time_limits:
                problems.append(
                    f"job {job.name!r} has a time limit that {caps.name} cannot enforce"
                )
            if (
                job.time_limit is not None
                and not caps.lease_extension
                and job.time_limit > self.default_lease
            ):
                problems.append(
                    f"job {job.name!r}: time limit {job.time_limit} exceeds the lease "
                    f"{self.default_lease} and {caps.name} cannot extend leases; it would run twice"
                )
        return problems

    def _waiting_unknown_jobs(self, app: JobSet) -> list[str]:
        """Job names in the messages waiting in the app's queues that the app does not define
        (looked at through `Transport.peek`, which may see only some of them). Raises
        `BrokerUnavailable` if the broker cannot be reached."""
        queues = sorted({job.queue for job in app.jobs.values()}) or ["default"]
        bodies = self.transport.peek(queues)
        found = Counter(salvage(body).job or "(undecodable)" for body in bodies)
        return unknown_job_problems(found, app, queues)

    def close(self) -> None:
        self.transport.close()
        self.store.close()


def replay_body(body: bytes) -> bytes:
    """The body to send when replaying a dead letter: the envelope with its attempts reset.

    An undecodable body is replayed unchanged (it will be dead-lettered again, with its reason).
    """
    try:
        env = decode(body)
    except SerializationError:
        return body
    data = env.with_attempt(0).to_dict()
    return json.dumps(data, separators=(",", ":")).encode()
