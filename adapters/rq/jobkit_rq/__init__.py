"""jobkit on RQ: the ``rq+redis://`` backend.

jobkit jobs are real RQ jobs (``func_name`` is the job's name, JSON-serialized, never pickled), run
by an RQ worker (forking ``Worker`` or ``SimpleWorker``) with jobkit's semantics; see the README's
RQ section.
"""

from jobkit_rq._settings import Settings, parse_url
from jobkit_rq.backend import RqBackend, backend_from_url

__all__ = ["RqBackend", "Settings", "backend_from_url", "parse_url"]
