# Switchboard build/test harness.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

export PATH := $(HOME)/.cargo/bin:$(PATH)
# Shared target dir so repeated runs on one machine are incremental.
CARGO_TARGET_DIR ?= $(HOME)/.cache/switchboard/target
export CARGO_TARGET_DIR
ifdef CI
export CARGO_TERM_COLOR := never
endif

START := $(shell date +%s)

.PHONY: run test e2e bench build fmt clippy clean

run:
	scripts/install-deps.sh run
	cargo build --release --locked -p switchboard
	exec scripts/run.sh

test:
	scripts/install-deps.sh test
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/with-postgres.sh cargo test --workspace --locked
	scripts/e2e.sh
	@echo "make test: OK in $$(( $$(date +%s) - $(START) ))s"

# Benchmarks (release builds): each prints a table and writes JSON under
# $CARGO_TARGET_DIR/bench/ (see docs/benchmarks.md).
bench:
	scripts/install-deps.sh test
	scripts/with-postgres.sh cargo bench --locked -p switchboard-handoff --bench delivery
	cargo bench --locked -p switchboard-rtp --bench relay
	cargo bench --locked -p switchboard-telephony --bench setups
	cargo bench --locked -p switchboard-voice --bench turns
	cargo bench --locked -p switchboard-speech --features whisper --bench wer
	@echo "make bench: OK in $$(( $$(date +%s) - $(START) ))s"

# The browser tests alone (Debian chromium driven by playwright-core).
e2e:
	scripts/install-deps.sh test
	scripts/e2e.sh

build:
	cargo build --release --locked -p switchboard

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

clean:
	cargo clean
