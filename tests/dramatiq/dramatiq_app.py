"""The ledger test app as a module for the plain ``dramatiq`` command: its jobs declared as
Dramatiq actors on a broker for the URL in JOBKIT_DRAMATIQ_URL."""

from __future__ import annotations

import os

from jobkit_dramatiq import install

from tests.apps.ledger import app

broker = install(app, os.environ["JOBKIT_DRAMATIQ_URL"])
