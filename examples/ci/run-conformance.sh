#!/bin/sh
# The same job as github-actions.yml, for any CI system (GitLab, Jenkins, Buildkite...).
set -eu
: "${RUNNER_TEMP:=$(mktemp -d)}"
export RUNNER_TEMP
here=$(dirname "$0")
jobkit-conformance run --config "$here/conformance.toml" \
    --junit conformance.xml --markdown conformance.md --json conformance.json
