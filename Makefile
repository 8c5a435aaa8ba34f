# Quiver developer commands. `make run` starts Quiver, `make test` runs every test.
# Both install missing system packages first (scripts/install-deps.sh).

SHELL := /bin/bash
# One cargo target directory outside the clone, so rebuilding FAISS happens once per machine.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/quiver/target
export PATH := $(HOME)/.cache/quiver/tools/bin:$(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:8277
DATA_DIR ?= ./quiver-data

.PHONY: run test deps build lint unit api

deps:
	@scripts/install-deps.sh

build: deps
	cargo build --release -p quiver-coordinator --bin quiver

## Start the embedded single-process cluster (coordinator + node over loopback QUIC).
run: build
	$(CARGO_TARGET_DIR)/release/quiver dev --listen $(LISTEN) --data-dir $(DATA_DIR)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit: deps
	cargo test --workspace

api: deps
	cargo build -p quiver-coordinator --bin quiver
	QUIVER_BIN=$(CARGO_TARGET_DIR)/debug/quiver tests/api/run.sh

## Everything CI runs: formatting, lints, Rust tests, then the end-to-end API suite with boto3.
test: lint unit api
