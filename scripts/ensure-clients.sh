#!/usr/bin/env bash
# Real clients the tests drive through the gateway (Claude Code, Codex CLI), pinned here and installed from npm
# into versioned caches outside the repository on first use, announced on screen. Prints "NAME PATH" per client.
#   scripts/ensure-clients.sh            every client
#   scripts/ensure-clients.sh codex      one of them
set -euo pipefail
declare -A PACKAGE=([claude]="@anthropic-ai/claude-code" [codex]="@openai/codex")
declare -A VERSION=([claude]="2.1.332" [codex]="0.171.0")
CACHE="${TOLLWAY_CACHE:-$HOME/.cache/tollway}"
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(claude codex)
for name in "${names[@]}"; do
  package="${PACKAGE[$name]:?unknown client $name}"
  version="${VERSION[$name]}"
  dir="$CACHE/npm/${package//\//+}-$version"
  bin="$dir/node_modules/.bin/$name"
  if [ ! -x "$bin" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "npm is required to install $package $version for the tests (install Node.js)" >&2
      exit 1
    fi
    echo ">> installing $package $version from npm into $dir (first run only)" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "$package@$version" >&2
  fi
  echo "$name $bin"
done
