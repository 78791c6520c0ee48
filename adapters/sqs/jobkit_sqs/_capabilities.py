"""What jobkit on SQS can do (`Capabilities`), as configured."""

from __future__ import annotations

from datetime import timedelta

from jobkit.spi import Capabilities, MigrationSupport
from jobkit_sqs import codec
from jobkit_sqs.config import SqsConfig

FIFO_DEDUP_WINDOW = timedelta(minutes=5)
STORE_OPTION = "store=dynamodb://TABLE (or store=sqlite:///PATH on one machine)"
"""The URL option named when keys or results are refused for want of a shared store."""


def capabilities_for(config: SqsConfig, *, results: bool, indexed: bool = False) -> Capabilities:
    """`indexed`: delayed messages have entries in the delayed index (a shared job store on a
    standard queue, see `jobkit_sqs.migration`), so they can be migrated before they are due."""
    return Capabilities(
        name="sqs-fifo" if config.fifo else "sqs",
        redelivery="visibility timeout (lease) expiry",
        # receive sets each message's visibility timeout to the worker's lease
        redelivery_after=None,
        # leases and delays are rounded up to whole seconds; SQS's own timers add up to 1 s
        scheduling_precision=timedelta(seconds=2),
        dead_letter=True,
        max_delay=timedelta(0) if config.fifo else None,
        priorities=1,
        dedup_window=FIFO_DEDUP_WINDOW if config.fifo else None,
        time_limits=True,
        lease_extension=True,
        results=results,
        idempotency_keys=results,
        store_option=STORE_OPTION,
        max_message_bytes=config.max_message_bytes - codec.ATTRIBUTE_RESERVE,
        shared_across_processes=True,
        # due messages are received; delayed ones come from the delayed index (with a shared
        # store); dead letters are received from the DLQ; job ids are looked up in the store
        # a killed export's receives are taken out again through the store, except one that
        # fell between its receive and its record (and all of them without a shared store)
        migration=MigrationSupport(
            delayed_before_due=indexed,
            dead_letters=True,
            dedup="marker" if results else "none",
            killed_export_counts=True,
        ),
        survives_broker_restart=True,  # SQS stores messages redundantly until deleted
    )
