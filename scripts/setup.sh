#!/usr/bin/env bash
# Create .venv and install saegap with its pinned dependencies. Idempotent: re-runs
# only when pyproject.toml changed. torch is installed FIRST, on its own, so the CPU
# wheel provided on these machines is kept (any later torch request is then satisfied).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .work
log=.work/setup.log
stamp=.venv/.saegap-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv (log: $log)"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
run() { "$@" >>"$log" 2>&1 || { tail -40 "$log"; echo "setup failed: $*" >&2; exit 1; }; }
run .venv/bin/python -m pip install --upgrade pip
run .venv/bin/pip install "${SAEGAP_TORCH:-torch==2.13.0}"
run .venv/bin/pip install -e ".[dev]"
echo "$want" >"$stamp"
