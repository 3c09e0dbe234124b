#!/usr/bin/env bash
# Idempotently install the system packages Switchboard needs.
#   scripts/install-deps.sh [run|test]
# Only touches apt when a package is actually missing. Works as root or via sudo.
set -euo pipefail

# Package lists: append here as new needs appear (e.g. sip-tester, chromium).
# cmake builds CTranslate2 (offline Whisper, through ct2rs); espeak-ng is the
# fallback voice; python3 + venv host Piper and the model wheels.
RUN_PKGS=(pkg-config build-essential ca-certificates sqlite3 curl cmake espeak-ng python3 python3-venv)
# sip-tester (sipp) and baresip are the real SIP peers of the telephony tests;
# chromium (+ fonts) and node run the browser tests in e2e/.
TEST_PKGS=(postgresql sip-tester baresip-core iproute2 chromium fonts-dejavu-core nodejs)

mode="${1:-run}"
case "$mode" in
  run)  pkgs=("${RUN_PKGS[@]}") ;;
  test) pkgs=("${RUN_PKGS[@]}" "${TEST_PKGS[@]}") ;;
  *) echo "usage: $0 [run|test]" >&2; exit 2 ;;
esac

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n env DEBIAN_FRONTEND=noninteractive)
  fi
fi

missing=()
for p in "${pkgs[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)"
  if [ "$status" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

# npm comes inside NodeSource's nodejs; Debian's own nodejs needs the npm package.
if [ "$mode" = test ] && ! command -v npm >/dev/null 2>&1; then
  missing+=(npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing packages (${missing[*]}) and apt-get is not available; install them manually." >&2
    exit 1
  fi
  if [ "$(id -u)" -ne 0 ] && [ "${#SUDO[@]}" -eq 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root or install sudo." >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: system packages for '$mode' already installed"
fi

# Rust toolchain (installed via rustup, usually in ~/.cargo/bin).
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
install-deps: Rust toolchain not found (no `cargo` in PATH or ~/.cargo/bin).
Install it with rustup:
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
MSG
  exit 1
fi

need_components=()
cargo fmt --version >/dev/null 2>&1 || need_components+=(rustfmt)
cargo clippy --version >/dev/null 2>&1 || need_components+=(clippy)
if [ "${#need_components[@]}" -gt 0 ]; then
  if command -v rustup >/dev/null 2>&1; then
    echo "install-deps: adding rust components ${need_components[*]}"
    rustup component add "${need_components[@]}"
  else
    echo "install-deps: cargo ${need_components[*]} missing and rustup not found; install them manually." >&2
    exit 1
  fi
fi

# Offline speech models (Whisper tiny.en, the Piper voice) from PyPI, pinned
# with hashes, into $HOME/.cache/switchboard/venv.
"$(dirname "$0")/install-speech.sh"
