#!/usr/bin/env bash
# Start the local PostgreSQL and Redis the tests talk to, if they are not running.
set -uo pipefail
if ! (command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432); then
  if ls /etc/postgresql >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1); then
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
fi
# tests/hosts (several hosts as network namespaces) needs iproute2's `ip`
command -v ip >/dev/null || { command -v apt-get >/dev/null && apt-get install -y -q iproute2 >/dev/null 2>&1; } || true
for _ in $(seq 1 30); do
  pg=$(pg_isready -q -h 127.0.0.1 -p 5432 && echo up || echo down)
  rd=$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && echo up || echo down)
  [ "$pg" = up ] && [ "$rd" = up ] && exit 0
  sleep 1
done
echo "warning: postgres=$pg redis=$rd; tests that need them will fail" >&2
