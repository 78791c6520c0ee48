"""The Celery and kombu versions jobkit-celery supports, and the check that refuses others.

`_redis_transport` subclasses private kombu methods and `_consumer` a Celery worker internal
(``Consumer.create_task_handler``); both are tested on the lowest and the highest version of
these ranges (``tests/run.sh`` runs the Celery tests in a second virtualenv with the lowest).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import jobkit

# [lowest, above highest): keep in step with adapters/celery/pyproject.toml
CELERY = ((5, 3), (6, 0))
KOMBU = ((5, 3), (6, 0))


def _release(text: str) -> tuple[int, ...]:
    """The leading release numbers of a version string ("5.7.0rc1" -> (5, 7, 0))."""
    out: list[int] = []
    for part in text.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        out.append(int(digits))
        if len(digits) < len(part):
            break
    return tuple(out)


def _shown(bounds: tuple[tuple[int, ...], tuple[int, ...]]) -> str:
    low, high = bounds
    return f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"


def check_versions(celery: str | None = None, kombu: str | None = None) -> None:
    """Raise `ConfigurationError` unless the installed (or given) Celery and kombu versions are
    in the supported ranges. Cheap after the first call of a process (metadata is cached)."""
    for name, given, bounds in (("celery", celery, CELERY), ("kombu", kombu, KOMBU)):
        try:
            found = given if given is not None else version(name)
        except PackageNotFoundError:
            continue  # not installed: the import fails with its own message
        low, high = bounds
        if not low <= _release(found) < high:
            raise jobkit.ConfigurationError(
                f"jobkit-celery supports {name}{_shown(bounds)}, but {name} {found} is "
                "installed (jobkit's Redis transport and consumer subclass its internals); "
                f"install a supported one: pip install '{name}{_shown(bounds)}'"
            )


def splits_acks_on_timeout() -> bool:
    """Whether this Celery has ``task_acks_on_timeout`` apart from ``task_acks_on_failure``
    (Celery >= 5.7). Older ones have only ``task_acks_on_failure_or_timeout``, so a hard time
    limit that must requeue the message also means a failed task is not acked (`_runtime` then
    ends a failed job with `Ignore`, which acks it)."""
    from celery.app.defaults import NAMESPACES

    return "acks_on_timeout" in NAMESPACES["task"]
