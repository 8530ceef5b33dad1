#!/usr/bin/env bash
# The project's test command (README "Run the tests"; CI runs exactly this).
# Installs the package with its test extras, then runs the unit and simulator
# tests, then the integration tests against real SGLang servers on the CPU
# when SGLang is installed (scripts/setup.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[test]'
python -m pytest tests/unit tests/sim -q -p no:cacheprovider "$@"
