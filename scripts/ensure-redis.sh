#!/usr/bin/env bash
# The rate-limit tests start a real redis-server. Install Debian's package on first use.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
echo ">> installing redis-server from Debian's packages (first run only)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package may start a system service; the tests run their own servers on free ports.
$SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
command -v redis-server
