#!/usr/bin/env bash
# Set-up for the main job (README): this package plus real SGLang 0.5.23 for the CPU
# (torch, Mooncake's non-CUDA transfer engine and its Debian libraries, sglang-router),
# installed into the current Python environment. Idempotent.
# GPU machines: `pip install 'hyperflexis-sglang[gpu]'` instead (full SGLang).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
"$PY" -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "is ignored: it is neither" || true
PYTHON="$PY" bash scripts/install_sglang_cpu.sh
