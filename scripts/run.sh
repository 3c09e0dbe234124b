#!/usr/bin/env bash
# `make run` main job: start the Switchboard server on embedded defaults,
# place a demo call that ends in a handoff (visible in the built-in Salesforce
# sandbox), and keep serving in the foreground until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard/target}"
DATA_DIR="${SWITCHBOARD_DATA_DIR:-./data}"
export SWITCHBOARD_HTTP_ADDR="${SWITCHBOARD_HTTP_ADDR:-127.0.0.1:8080}"
bin="$CARGO_TARGET_DIR/release/switchboard"

if [ ! -x "$bin" ]; then
  echo "run: $bin not found; build it with 'make build' (or 'make run')." >&2
  exit 1
fi
mkdir -p "$DATA_DIR"

# The server prints the dashboard URL and, on first start, the admin credentials.
"$bin" serve --data-dir "$DATA_DIR" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' INT TERM EXIT

host="${SWITCHBOARD_HTTP_ADDR%:*}"
port="${SWITCHBOARD_HTTP_ADDR##*:}"
# Ready means serving: SIP and the speech models are up before HTTP answers.
for _ in $(seq 1 600); do
  if ! kill -0 "$server" 2>/dev/null; then
    wait "$server"
    exit $?
  fi
  if curl -fsS -o /dev/null "http://$host:$port/readyz" 2>/dev/null; then
    break
  fi
  sleep 0.1
done

echo
echo "Placing a demo call that ends in a handoff…"
"$bin" demo --data-dir "$DATA_DIR" || echo "run: the demo call did not complete; see the messages above." >&2
echo
echo "Serving until Ctrl-C."
wait "$server"
