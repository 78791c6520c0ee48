"""How an envelope travels as an RQ job: ``func_name`` = the job's name, RQ's args and kwargs =
the job's, and the rest of the envelope in ``job.meta["jobkit"]``. All JSON (RQ's
`JSONSerializer`), so RQ tools read it and nothing is pickled.
"""

from __future__ import annotations

import json
from typing import Any

from rq.serializers import JSONSerializer

from jobkit import spi
from jobkit.spi import Envelope

META = "jobkit"  # job.meta key holding the envelope's fields other than id, name and arguments
REASON = "jobkit_reason"  # job.meta key: why jobkit dead-lettered the job
# Attribute a jobkit worker sets on the Job object it performs (not saved): the execution's
# StartedJobRegistry member, "<job id>:<execution id>"
EXECUTION = "jobkit_execution"
# More such attributes, set while a jobkit worker performs the job (see `Runtime.prepare`,
# `Runtime.success_in`): the start counted in RQ's preparation (envelope, definition, count);
# that the worker commits the success record in RQ's transaction; the record; that it did.
PREPARED = "jobkit_prepared"
DEFER_SUCCESS = "jobkit_defer_success"
SUCCESS = "jobkit_success"
CARRIED = "jobkit_success_carried"
SERIALIZER = JSONSerializer

_OWN = ("id", "job", "args", "kwargs", "queue")


def meta_of(env: Envelope) -> dict[str, Any]:
    """The envelope's fields that RQ does not carry itself."""
    return {k: v for k, v in env.to_dict().items() if k not in _OWN}


def envelope_of(
    *, job_id: str, name: str, args: Any, kwargs: Any, meta: Any, queue: str
) -> Envelope:
    """The envelope of an RQ job. A job without jobkit's meta (sent by plain RQ code) gets the
    defaults of a fresh job. Raises `SerializationError` (or `UnsupportedEnvelopeVersion`)."""
    fields = meta.get(META) if isinstance(meta, dict) else None
    if not isinstance(fields, dict):
        fields = meta_of(Envelope(id=job_id, job=name))
    body = {
        **fields,
        "id": job_id,
        "job": name,
        "args": list(args),
        "kwargs": kwargs,
        "queue": queue,
    }
    return spi.decode(json.dumps(body))
