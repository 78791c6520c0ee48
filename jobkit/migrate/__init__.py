"""Moving jobs between two backends without losing one: the engine behind `jobkit migrate`.

Per batch: `export_jobs` at the source (under an export lease), check each job against the
target's capabilities, `import_jobs` into the target (idempotent by job id), `present_jobs` at
the target to confirm, then `commit_export` at the source for what the target confirmed and
`release_export` for the rest. A kill at any instant leaves every job at the source, at the
target, or (between the import and the commit) at both, where the re-run finds it present at
the target, skips it and deletes it at the source.
"""

from jobkit.migrate._engine import Migration, migrate
from jobkit.migrate._report import QueueReport, Report

__all__ = ["Migration", "QueueReport", "Report", "migrate"]
