#!/usr/bin/env bash
# `make run` main job: start the Switchboard server in the foreground.
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
exec "$bin" serve --data-dir "$DATA_DIR"
