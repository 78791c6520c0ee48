#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Python 3.11:
#   installs Debian's redis-server and rabbitmq-server (without starting the system services),
#   creates .venv with jobkit, the conformance suite and every adapter (editable),
#   runs ruff, mypy --strict, and pytest. The tests start their own broker processes on
#   127.0.0.1 ports of their own and stop them (by PID) when they end.
# Usage: tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n== %s\n' "$*"; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_debian_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v rabbitmq-server >/dev/null || [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] \
    || missing+=(rabbitmq-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  # Forbid the packages' maintainer scripts from starting system services: the tests start
  # their own servers on ports of their own and must not find strays on the default ports.
  local policy=/usr/sbin/policy-rc.d created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    created_policy=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  [ "$created_policy" = 1 ] && as_root rm -f "$policy"
  return 0
}

python_bin=${PYTHON:-python3.11}
command -v "$python_bin" >/dev/null || python_bin=python3

install_debian_packages

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($python_bin --version)"
  "$python_bin" -m venv .venv
fi
say "installing jobkit, the conformance suite and the adapters (editable)"
packages=(-e ".[dev]" -e conformance -r tests/requirements.txt)
for adapter in adapters/*/; do
  [ -f "$adapter/pyproject.toml" ] && packages+=(-e "$adapter")
done
for extra in tests/*/pyproject.toml tests/*/*/pyproject.toml; do
  [ -f "$extra" ] && packages+=(-e "$(dirname "$extra")")
done
# (pip's notes about this machine's local package mirrors are filtered out; errors still fail)
.venv/bin/python -m pip install -q --disable-pip-version-check "${packages[@]}" 2>&1 \
  | { grep -v '^WARNING: Location .* is ignored' || true; }

say "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

say "mypy --strict (core, conformance, adapters, benchmarks)"
.venv/bin/mypy jobkit conformance/jobkit_conformance
.venv/bin/mypy adapters/sqs/jobkit_sqs
.venv/bin/mypy --config-file adapters/celery/pyproject.toml adapters/celery/jobkit_celery
.venv/bin/mypy --config-file adapters/dramatiq/pyproject.toml adapters/dramatiq/jobkit_dramatiq
.venv/bin/mypy --config-file adapters/rq/pyproject.toml adapters/rq/jobkit_rq
.venv/bin/mypy --config-file adapters/rabbitmq/pyproject.toml adapters/rabbitmq/jobkit_rabbitmq
.venv/bin/mypy --strict bench

export PYTHONUNBUFFERED=1

# jobkit-celery on the LOWEST Celery/kombu it declares (.venv above has the highest): a second
# venv, running the Celery tests that go through its private-API subclasses (the Redis transport
# and the consumer). On a whole-suite run (no pytest args), or with JOBKIT_CELERY_LOW=1.
celery_low=(celery==5.3.0 kombu==5.3.0)  # keep in step with adapters/celery/jobkit_celery/_versions.py
if [ $# -eq 0 ] || [ "${JOBKIT_CELERY_LOW:-0}" = 1 ]; then
  say "pytest: tests/celery subset on ${celery_low[*]} (.venv-celery-low)"
  [ -x .venv-celery-low/bin/python ] || "$python_bin" -m venv .venv-celery-low
  .venv-celery-low/bin/python -m pip install -q --disable-pip-version-check -e . -e conformance \
    -e adapters/celery "pytest>=8" "${celery_low[@]}" 2>&1 \
    | { grep -v '^WARNING: Location .* is ignored' || true; }
  # (about 7 min on a loaded 2-core machine; the kill-loop soak of the Redis hand-over and the
  # 30 s delay trap run on the newest only: the 3x-visibility delay trap covers the same path)
  .venv-celery-low/bin/python -m pytest -p no:cacheprovider -q tests/celery/test_celery_poison.py \
    tests/celery/test_celery_redis_traps.py tests/celery/test_celery_settings.py \
    tests/celery/test_celery_shutdown.py tests/celery/test_celery_status.py \
    tests/celery/test_celery_worker.py tests/celery/test_celery_worker_options.py \
    -k "not 30s_delay"
fi

# In parallel: the tests mostly wait on brokers and worker processes, so one pytest worker per
# core plus one, at most 4 (JOBKIT_TEST_WORKERS overrides; 0 runs them in this process, as
# --pdb needs). --dist loadfile runs each test module whole on one worker, so module-scoped
# fixtures run once (loadgroup's xdist_group marks have no effect with pytest 9.2 and
# xdist 3.8: xdist sets Item._nodeid, which pytest no longer reads). Every worker starts its
# own broker servers on free ports. A later -n in the arguments wins.
workers=${JOBKIT_TEST_WORKERS:-$(($(nproc) + 1 < 4 ? $(nproc) + 1 : 4))}
say "pytest ($workers workers)"
# --durations: the slowest tests in the log, to see where the run's time goes (budget: 45 min
# for this whole script on 2 cores)
exec .venv/bin/python -m pytest -p no:cacheprovider -n "$workers" --dist loadfile --durations=25 \
  "$@"
