#!/usr/bin/env bash
# The one test command (README, .ci/run): set up, start services, lint, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/services.sh
[ -f scripts/setup_browser.sh ] && bash scripts/setup_browser.sh
bash scripts/setup_compose.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled PYTHONHASHSEED=0
exec .venv/bin/pytest "$@"
