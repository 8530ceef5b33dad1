#!/usr/bin/env bash
# Install real SGLang 0.5.23 for CPU-only use into the current Python
# environment (activate a venv first to keep it there).
#
# Idempotent: every step checks first and skips work already done; a re-run
# on a ready machine takes ~1 s. Steps:
#   1. Debian libraries for Mooncake's transfer engine (apt-get).
#   2. scripts/requirements-sglang-cpu.txt (normal dependency resolution).
#   3. its "#nodeps:" lines (sglang itself) with --no-deps: sglang's metadata
#      would pull ~4 GB of GPU-only kernels that are never imported on CPU.
#   4. an import check of what a CPU server and a P/D pair need (only when
#      something was installed, or with --check).
#
# Installer: uv (bootstrapped with pip into this environment; ~2x faster than
# pip on the ~4 GB of torch + nvidia wheels, measured 52 s vs 89-150 s on 2
# cores) with pip's index settings (pip config list) passed through; set
# HFX_INSTALLER=pip to use pip only.
#
# Env: PYTHON (default: python), HFX_INSTALLER=uv|pip (default uv),
#      HFX_SKIP_APT=1 (skip step 1), HFX_FORCE=1 (reinstall even if satisfied).
# Usage: scripts/install_sglang_cpu.sh [--check]   (--check: verify only, exit 1 if not ready)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REQ="$HERE/requirements-sglang-cpu.txt"
PY="${PYTHON:-python}"
INSTALLER="${HFX_INSTALLER:-uv}"
UV_PIN="uv==0.13.9"
APT_PKGS=(libibverbs1 libnl-3-200 libnl-route-3-200)
VERIFY_MODULES="torch torchvision triton transformers sglang sglang.srt.server_args
sglang.srt.entrypoints.http_server sglang_router.launch_router mooncake.engine"
CHECK_ONLY=0
CHANGED=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

log() { printf '[install_sglang_cpu] %s\n' "$*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Requirements of REQ, one per line: plain lines (deps) or "#nodeps:" lines (nodeps).
requirements() {
  if [[ "$1" == nodeps ]]; then
    sed -n 's/^#nodeps:[[:space:]]*//p' "$REQ"
  else
    sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$REQ" | grep -v '^[[:space:]]*$' || true
  fi
}

# Exit 0 when every requirement in $1 (newline-separated) is installed at a
# matching version; list the others on stderr.
satisfied() {
  HFX_REQS="$1" "$PY" - <<'EOF'
import os, sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
except ImportError:  # fresh interpreter: pip vendors packaging
    from pip._vendor.packaging.requirements import Requirement
missing = []
for line in os.environ["HFX_REQS"].split("\n"):
    if not line.strip():
        continue
    req = Requirement(line)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        missing.append(f"{req} (not installed)")
        continue
    if not req.specifier.contains(version, prereleases=True):
        missing.append(f"{req} (have {version})")
for m in missing[:5]:
    print(f"  missing: {m}", file=sys.stderr)
if len(missing) > 5:
    print(f"  ... and {len(missing) - 5} more", file=sys.stderr)
sys.exit(1 if missing else 0)
EOF
}

step_apt() {
  if [[ "${HFX_SKIP_APT:-0}" == 1 ]] || ! command -v dpkg-query >/dev/null; then
    log "apt: skipped (HFX_SKIP_APT=1 or not a Debian system)"; return 0
  fi
  local p missing=()
  for p in "${APT_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [[ ${#missing[@]} == 0 ]]; then log "apt: ${APT_PKGS[*]} already installed"; return 0; fi
  [[ $CHECK_ONLY == 1 ]] && { log "apt: missing ${missing[*]}"; return 1; }
  local sudo=""; [[ $(id -u) != 0 ]] && sudo="sudo"
  local t; t=$(now)
  log "apt: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  CHANGED=1
  log "apt: done in $(elapsed "$t") s"
}

# pip's configured indexes (pip.conf / PIP_* env) as uv arguments, one per
# line, plus "CERT=<file>"; uv ignores pip.conf.
pip_index_args() {
  "$PY" -m pip config list 2>/dev/null | "$PY" -c '
import shlex, sys
for line in sys.stdin:
    key, _, value = line.strip().partition("=")
    opt = key.rsplit(".", 1)[-1]
    for v in shlex.split(value):
        if opt in ("index-url", "extra-index-url", "find-links"):
            print("--" + opt); print(v)
        elif opt == "cert":
            print("CERT=" + v)'
}

ensure_uv() {
  "$PY" -m uv --version >/dev/null 2>&1 && return 0
  log "uv: bootstrapping $UV_PIN with pip"
  "$PY" -m pip install --disable-pip-version-check -q "$UV_PIN" 2>&1 | grep -v "is ignored: it is neither" || true
  "$PY" -m uv --version >/dev/null 2>&1
}

# install <flags...> -- <requirements...>
install() {
  local flags=() reqs=()
  while [[ $1 != -- ]]; do flags+=("$1"); shift; done; shift
  reqs=("$@")
  if [[ "$INSTALLER" == uv ]] && ensure_uv; then
    local line env_=() idx=()
    while IFS= read -r line; do
      if [[ "$line" == CERT=* ]]; then env_=("SSL_CERT_FILE=${line#CERT=}"); else idx+=("$line"); fi
    done < <(pip_index_args)
    # uv installs outside a virtual environment only when told so (CI uses the plain interpreter)
    local target=()
    "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' || target=(--system)
    env "${env_[@]}" "$PY" -m uv pip install --python "$PY" "${target[@]}" --no-cache \
      --index-strategy unsafe-best-match "${idx[@]}" "${flags[@]}" "${reqs[@]}"
  else
    [[ "$INSTALLER" == uv ]] && log "uv unavailable; falling back to pip"
    "$PY" -m pip install --disable-pip-version-check "${flags[@]}" "${reqs[@]}" 2>&1 \
      | grep -vE "is ignored: it is neither|requires .*, which is not installed|dependency resolver does not currently" || true
  fi
}

step_pip() {  # $1 = deps | nodeps
  local mode="$1" reqs flags=()
  reqs="$(requirements "$mode")"
  [[ -z "$reqs" ]] && return 0
  if [[ "${HFX_FORCE:-0}" != 1 ]] && satisfied "$reqs"; then
    log "packages ($mode): all $(wc -l <<<"$reqs") requirements already satisfied"; return 0
  fi
  [[ $CHECK_ONLY == 1 ]] && { log "packages ($mode): not satisfied"; return 1; }
  [[ "$mode" == nodeps ]] && flags+=(--no-deps)
  [[ "${HFX_FORCE:-0}" == 1 ]] && flags+=(--reinstall)
  [[ "${HFX_FORCE:-0}" == 1 && "$INSTALLER" != uv ]] && flags=("${flags[@]/--reinstall/--force-reinstall}")
  local t; t=$(now)
  log "packages ($mode): installing with $INSTALLER"
  mapfile -t req_array <<<"$reqs"
  install "${flags[@]}" -- "${req_array[@]}"
  satisfied "$reqs" || { log "packages ($mode): install failed"; return 1; }
  CHANGED=1
  log "packages ($mode): done in $(elapsed "$t") s"
}

step_verify() {
  if [[ $CHANGED == 0 && $CHECK_ONLY == 0 ]]; then log "verify: skipped (nothing installed)"; return 0; fi
  local t; t=$(now)
  (cd /tmp && PYTHONWARNINGS=ignore HFX_MODULES="$VERIFY_MODULES" "$PY" - <<'EOF'
import importlib, os
for mod in os.environ["HFX_MODULES"].split():
    importlib.import_module(mod)
import torch, sglang
print(f"torch {torch.__version__} (cuda available: {torch.cuda.is_available()}), sglang {sglang.__version__}")
EOF
  ) || { log "verify: import failed"; return 1; }
  log "verify: imports ok in $(elapsed "$t") s"
}

main() {
  local t0; t0=$(now)
  [[ -f "$REQ" ]] || { log "missing $REQ"; exit 1; }
  log "python: $("$PY" -c 'import sys; print(sys.executable)')"
  step_apt
  step_pip deps
  step_pip nodeps
  step_verify
  log "total: $(elapsed "$t0") s"
}

main "$@"
