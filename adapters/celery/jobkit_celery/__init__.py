"""jobkit on Celery: ``celery+redis://`` and ``celery+amqp://`` backends.

jobkit jobs become real Celery tasks (named after the jobs), run by a Celery worker with
hardened settings; see ``docs/adapters/celery.md``.
"""

from jobkit_celery._settings import Settings, parse_url
from jobkit_celery._store import RedisJobStore
from jobkit_celery.backend import CeleryBackend, backend_from_url

__version__ = "0.1.0"

__all__ = ["CeleryBackend", "RedisJobStore", "Settings", "backend_from_url", "parse_url"]
