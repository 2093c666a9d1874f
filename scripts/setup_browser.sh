#!/usr/bin/env bash
# Browser test prerequisites: Debian chromium (apt) and playwright-core (npm) in tests/ui/browser.
# Idempotent and quiet: does nothing when both are already there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BROWSER_DIR="$ROOT/tests/ui/browser"

if [ ! -x /usr/bin/chromium ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  cd "$BROWSER_DIR"
  if [ -f package-lock.json ]; then
    npm ci --silent --no-audit --no-fund
  else
    npm install --silent --no-audit --no-fund
  fi
fi
