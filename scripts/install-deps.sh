#!/usr/bin/env bash
# Idempotently install the system packages Switchboard needs.
#   scripts/install-deps.sh [run|test]
# Only touches apt when a package is actually missing. Works as root or via sudo.
set -euo pipefail

# Package lists: append here as new needs appear (e.g. sip-tester, chromium).
RUN_PKGS=(pkg-config build-essential ca-certificates sqlite3)
TEST_PKGS=(postgresql python3)

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
