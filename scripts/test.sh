#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this via .ci/run).
# 1. installs the package, its test extras and real SGLang for the CPU (scripts/setup.sh);
# 2. runs the pure policy-core and simulator tests (seconds);
# 3. runs the integration tests against real SGLang servers on the CPU (minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
bash scripts/setup.sh
"$PY" -m pytest tests/unit tests/sim -q -p no:cacheprovider "$@"
# Integration servers must not be shadowed by this checkout's package folder: pytest runs
# from the repo root, the servers are started from a temp directory (controller/local.py).
"$PY" -m pytest tests/integration -q -p no:cacheprovider -m integration --timeout 900 "$@"
