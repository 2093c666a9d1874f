#!/usr/bin/env bash
# Debian's docker-compose (1.29) validates docker-compose.yml offline (no engine needed).
set -uo pipefail
command -v docker-compose >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 \
    || echo "warning: could not install docker-compose; the compose validation test will skip" >&2
fi
exit 0
