#!/usr/bin/env bash
# `make run`: the mock LLM on 127.0.0.1:9090 and the gateway on 127.0.0.1:8080, serving examples/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MOCK_PORT=${MOCK_PORT:-9090}
PORT=${PORT:-8080}

"$BIN/tollway" mock --host 127.0.0.1 --port "$MOCK_PORT" &
mock_pid=$!
trap 'kill $mock_pid 2>/dev/null || true' EXIT

cat <<MSG
>> Tollway is starting on http://127.0.0.1:$PORT (mock LLM on :$MOCK_PORT, metrics on :9464/metrics)
>> try:  curl http://127.0.0.1:$PORT/v1/chat/completions -H 'Authorization: Bearer sk-tollway-demo' \\
            -H 'Content-Type: application/json' -d '{"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}'
MSG
"$BIN/tollway" run --crs examples/quickstart --host 127.0.0.1 --port "$PORT" --drain-delay 0 --grace-period 10
