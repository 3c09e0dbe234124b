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

.PHONY: run test build fmt clippy clean

run:
	scripts/install-deps.sh run
	cargo build --release --locked -p switchboard
	exec scripts/run.sh

test:
	scripts/install-deps.sh test
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings
	scripts/with-postgres.sh cargo test --workspace --locked
	@echo "make test: OK in $$(( $$(date +%s) - $(START) ))s"

build:
	cargo build --release --locked -p switchboard

fmt:
	cargo fmt --all

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

clean:
	cargo clean
