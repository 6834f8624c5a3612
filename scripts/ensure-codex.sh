#!/usr/bin/env bash
# The Responses API tests drive Codex CLI as a real client. Install the pinned version from npm into a
# versioned cache outside the repository on first use; print the binary's path.
set -euo pipefail
VERSION="${CODEX_VERSION:-0.171.0}"
DIR="${TOLLWAY_CACHE:-$HOME/.cache/tollway}/codex-$VERSION"
BIN="$DIR/node_modules/.bin/codex"
if [ -x "$BIN" ]; then
  echo "$BIN"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "npm is required to install Codex CLI $VERSION for the tests (install Node.js)" >&2
  exit 1
fi
echo ">> installing Codex CLI $VERSION from npm into $DIR (first run only)" >&2
mkdir -p "$DIR"
npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@openai/codex@$VERSION" >&2
"$BIN" --version >&2
echo "$BIN"
