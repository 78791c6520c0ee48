#!/usr/bin/env bash
# The main job on the embedded SQLite default (no server needed), from a fresh machine with
# Python 3.11: creates .venv, installs jobkit and the conformance suite, runs the example shop,
# then the conformance suite against the same backend.
set -euo pipefail
cd "$(dirname "$0")/.."
python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[metrics]" -e conformance
exec .venv/bin/python examples/quickstart.py
