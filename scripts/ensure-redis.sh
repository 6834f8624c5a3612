#!/usr/bin/env bash
# The rate-limit tests start real redis-server and redis-sentinel processes. Install Debian's packages on first use.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1 && command -v redis-sentinel >/dev/null 2>&1; then
  exit 0
fi
echo ">> installing redis-server and redis-sentinel from Debian's packages (first run only)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends redis-server redis-sentinel >/dev/null
# The packages may start system services; the tests run their own servers on free ports.
for service in redis-server redis-sentinel; do
  $SUDO systemctl disable --now "$service" >/dev/null 2>&1 || $SUDO service "$service" stop >/dev/null 2>&1 || true
done
command -v redis-server redis-sentinel
