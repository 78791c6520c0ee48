"""The jobkit app's jobs as Dramatiq actors, from the environment, for the plain ``dramatiq``
command::

    JOBKIT_APP=myproject.jobs:app JOBKIT_BACKEND=dramatiq+redis://127.0.0.1:6379/0 \\
        dramatiq jobkit_dramatiq.env -Q default

The app (``JOBKIT_APP`` or ``[tool.jobkit] app``) and backend URL (``JOBKIT_BACKEND`` or
``[tool.jobkit] backend``) are resolved as ``jobkit worker`` resolves them. Importing this module
sets Dramatiq's global broker and declares the actors (`jobkit_dramatiq.install`): that is what
the ``dramatiq`` command expects of the modules it is given, and this module is for nothing else.
"""

from __future__ import annotations

from typing import Any

from jobkit.spi import load_app, resolve_app_path, resolve_backend_url
from jobkit_dramatiq.actors import install

broker: Any = install(load_app(resolve_app_path()), resolve_backend_url())
