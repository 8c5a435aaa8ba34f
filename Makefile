# Quiver developer commands. `make run` starts Quiver, `make test` runs every test.
# Both install missing system packages first (scripts/install-deps.sh).

SHELL := /bin/bash
# One cargo target directory outside the clone, so rebuilding FAISS happens once per machine.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/quiver/target
export PATH := $(HOME)/.cache/quiver/tools/bin:$(HOME)/.cargo/bin:$(PATH)

LISTEN ?= 127.0.0.1:8277
DATA_DIR ?= ./quiver-data

.PHONY: run test deps build lint unit api cluster cluster-stop cluster-status cluster-test

deps:
	@scripts/install-deps.sh

build: deps
	cargo build --release -p quiver --bin quiver

## Start the embedded single-process cluster (coordinator + node over loopback QUIC).
run: build
	$(CARGO_TARGET_DIR)/release/quiver dev --listen $(LISTEN) --data-dir $(DATA_DIR)

lint: deps
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

unit: deps
	cargo test --workspace

api: deps
	cargo build -p quiver --bin quiver -p quiver-chaos --bin quiver-chaos
	QUIVER_BIN=$(CARGO_TARGET_DIR)/debug/quiver QUIVER_CHAOS_BIN=$(CHAOS_DEBUG) tests/api/run.sh

## A local cluster: 3 coordinators (HTTP 8277-8279) and 3 nodes as separate processes, state in
## CLUSTER_DIR/cluster.json. `make cluster-stop` stops it; scripts/cluster.py kill/restart NAME.
CLUSTER_DIR ?= ./quiver-cluster
cluster: build
	scripts/cluster.py start --dir $(CLUSTER_DIR) --binary $(CARGO_TARGET_DIR)/release/quiver

cluster-stop:
	scripts/cluster.py stop --dir $(CLUSTER_DIR)

cluster-status:
	scripts/cluster.py status --dir $(CLUSTER_DIR) --binary $(CARGO_TARGET_DIR)/release/quiver

## The multi-process cluster test (kill -9 of a leader and a node, whole-cluster restart, foreign CA,
## a coordinator besieged on its HTTP and QUIC ports by quiver-chaos siege).
cluster-test: deps
	cargo build -p quiver --bin quiver -p quiver-chaos --bin quiver-chaos
	QUIVER_BIN=$(CARGO_TARGET_DIR)/debug/quiver QUIVER_CHAOS_BIN=$(CHAOS_DEBUG) QUIVER_TESTS=tests/cluster tests/api/run.sh -s

## Everything CI runs: formatting, lints, Rust tests, the end-to-end API suite with boto3, the
## multi-process cluster test, the offline deployment checks, the compose scenario in containers
## (from the debug binary), and short benchmark and load runs.
test: lint unit api cluster-test deploy-test compose-smoke chaos-smoke bench-smoke load-smoke fuzz-smoke

## Coverage-guided fuzzing (fuzz/, cargo fuzz + libFuzzer) of every parser facing the network:
## each target for FUZZ_SECONDS, seeded with the requests the handler tests send. A crash fails
## the run and leaves its input in fuzz/artifacts/TARGET/. `make fuzz-smoke` (in `make test`)
## runs each for 30 s.
.PHONY: fuzz fuzz-smoke
FUZZ_SECONDS ?= 300
fuzz: deps
	scripts/fuzz.sh $(FUZZ_SECONDS)

fuzz-smoke: deps
	scripts/fuzz.sh 30

## Mutation testing (cargo-mutants) of the pure cores in .cargo/mutants.toml: prints caught /
## missed and the score, lists the missed mutants (mutants.out/). About an hour on 2 cores; not in
## `make test`. MUTANTS_ARGS passes arguments, e.g. MUTANTS_ARGS="-F throttle.rs".
.PHONY: mutants
MUTANTS_ARGS ?=
mutants: deps
	scripts/mutants.sh $(MUTANTS_ARGS)

## Benchmarks and load (quiver-chaos, see chaos/README.md). Reports (JSON, SVG plots) land in $(CARGO_TARGET_DIR)/quiver-chaos-*.
.PHONY: bench bench-smoke load load-smoke
CHAOS_DEBUG = $(CARGO_TARGET_DIR)/debug/quiver-chaos
CHAOS_RELEASE = $(CARGO_TARGET_DIR)/release/quiver-chaos

## Raw in-process FAISS vs Quiver end to end, 200,000 x 128 (release build).
bench: deps
	cargo build --release -p quiver -p quiver-chaos
	$(CHAOS_RELEASE) bench --count 200000 --dimension 128 --clusters 1000 --queries 1000 \
	  --threads 4 --query-seconds 20 --max-recall-gap 0.02 --quiver-bin $(CARGO_TARGET_DIR)/release/quiver \
	  --report $(CARGO_TARGET_DIR)/quiver-chaos-bench.json

## Tiny bench for CI: fails on recall below the floor or any non-throttling error.
bench-smoke: deps
	cargo build -p quiver -p quiver-chaos
	$(CHAOS_DEBUG) bench --count 5000 --dimension 32 --queries 200 --threads 4 \
	  --query-seconds 2 --min-recall 0.9 --max-recall-gap 0.02 --quiver-bin $(CARGO_TARGET_DIR)/debug/quiver \
	  --report $(CARGO_TARGET_DIR)/quiver-chaos-bench-smoke.json

## Replication factor 1 vs 3 on the local 3+3 cluster, side by side (ingest, put and query
## throughput and latency, recall), plus a kill -9 of a node during writes on RF 3.
.PHONY: bench-replication
bench-replication: deps
	cargo build --release -p quiver -p quiver-chaos
	scripts/bench_replication.py --quiver-bin $(CARGO_TARGET_DIR)/release/quiver \
	  --chaos-bin $(CHAOS_RELEASE) --report $(CARGO_TARGET_DIR)/quiver-bench-replication.json

## Chaos (quiver-chaos chaos, see chaos/README.md): a fresh 3+3 cluster with RF 3, faults on a
## seeded schedule under load, a history checked for lost, resurrected, phantom and stale data.
## CHAOS_ARGS adds flags (e.g. --seed 7, --nemesis kill=1, --concurrent-faults 2); CHAOS_REPORT
## moves the report.
.PHONY: chaos chaos-compose chaos-smoke
CHAOS_DIR = $(CARGO_TARGET_DIR)/quiver-chaos
CHAOS_ARGS ?=
CHAOS_REPORT ?= $(CHAOS_DIR)/chaos.json
chaos: deps
	cargo build --release -p quiver -p quiver-chaos
	$(CHAOS_RELEASE) chaos --duration 600 --quiver-bin $(CARGO_TARGET_DIR)/release/quiver \
	  --cluster-dir $(CHAOS_DIR)/cluster --report $(CHAOS_REPORT) $(CHAOS_ARGS)

## The same on the container cluster (deploy/compose, image quiver:latest from `make image`):
## faults through the container engine.
chaos-compose: image
	cargo build --release -p quiver-chaos
	$(CHAOS_RELEASE) chaos --target compose --duration 600 --report $(CHAOS_DIR)/chaos-compose.json $(CHAOS_ARGS)

## About four minutes, in `make test`: the default fault mix on RF 3 (no violation allowed), then
## disk loss on an index without replication (the lost writes must be found), then the default
## mix on the container cluster (image quiver:ci of the debug binary).
chaos-smoke: deps image-ci
	cargo build -p quiver -p quiver-chaos
	$(CHAOS_DEBUG) chaos --duration 75 --seed 11 --gap 1..3 --hold 4..7 \
	  --quiver-bin $(CARGO_TARGET_DIR)/debug/quiver --cluster-dir $(CHAOS_DIR)/smoke-cluster \
	  --report $(CHAOS_DIR)/smoke.json
	$(CHAOS_DEBUG) chaos --duration 20 --seed 12 --nemesis wipe --replication-factor 1 \
	  --gap 3..4 --hold 4..5 --recovery-timeout 20 --expect-lost \
	  --quiver-bin $(CARGO_TARGET_DIR)/debug/quiver --cluster-dir $(CHAOS_DIR)/smoke-cluster \
	  --report $(CHAOS_DIR)/smoke-wipe.json
	$(CHAOS_DEBUG) chaos --target compose --image-tag ci --duration 45 --seed 13 --gap 1..3 \
	  --hold 4..7 --report $(CHAOS_DIR)/smoke-compose.json

## Closed-loop load with the default mix against a release server (override with LOAD_ARGS).
LOAD_ARGS ?= --clients 64 --duration 30 --count 50000 --dimension 128
load: deps
	cargo build --release -p quiver -p quiver-chaos
	$(CHAOS_RELEASE) load $(LOAD_ARGS) --quiver-bin $(CARGO_TARGET_DIR)/release/quiver \
	  --report $(CARGO_TARGET_DIR)/quiver-chaos-load.json

## Short load for CI: 200 clients, 10 s or 3,000 requests; fails on errors other than 429 and on
## plain or filtered recall below 0.9 (or no successful query of either kind).
load-smoke: deps
	cargo build -p quiver -p quiver-chaos
	$(CHAOS_DEBUG) load --clients 200 --duration 10 --requests 3000 --count 5000 --dimension 32 \
	  --queries 200 --strict --min-recall 0.9 --min-filtered-recall 0.9 \
	  --quiver-bin $(CARGO_TARGET_DIR)/debug/quiver --report $(CARGO_TARGET_DIR)/quiver-chaos-load-smoke.json

## Offline checks of deploy/k8s (strict schema validation with the schemas bundled in
## kubernetes-validate, `kubectl kustomize` when kubectl is installed, the pods' effective
## configuration) and deploy/systemd (`systemd-analyze verify` when installed). No cargo, no
## cluster, no network beyond installing the test venv's packages.
.PHONY: deploy-test
deploy-test: deps
	QUIVER_TESTS=tests/deploy tests/api/run.sh

## Containers (deploy/docker, deploy/compose): an image FROM scratch built from the release
## binary (nothing pulled), and a 3-coordinator + 3-node compose cluster on its own network with
## the API on http://127.0.0.1:18277-18279. `make test` runs compose-smoke (below).
.PHONY: image image-ci compose-up compose-down compose-test compose-smoke
COMPOSE = docker-compose -p quiver -f deploy/compose/docker-compose.yml

image: build
	deploy/docker/build-image.sh $(CARGO_TARGET_DIR)/release/quiver

compose-up: image
	@start=$$(date +%s.%N); $(COMPOSE) up -d && \
	  for i in $$(seq 180); do \
	    [ "$$($(COMPOSE) ps | grep -c '(healthy)')" = 6 ] && break; sleep 1; done; \
	  $(COMPOSE) ps; \
	  [ "$$($(COMPOSE) ps | grep -c '(healthy)')" = 6 ] || { echo "compose-up: not every container is healthy" >&2; exit 1; }; \
	  printf 'healthy after %.1f s: http://127.0.0.1:18277 (quiverdev / quiverdevsecret)\n' \
	    "$$(echo "$$(date +%s.%N) - $$start" | bc)"

compose-down:
	$(COMPOSE) down -v --remove-orphans

## The compose scenario (tests/compose): boto3 through each coordinator, a stopped and a
## disconnected node, every acknowledged write readable after healing. Tears down whatever happens.
compose-test: image
	QUIVER_TESTS=tests/compose tests/api/run.sh -s

## The same compose scenario on an image of the debug binary (tag quiver:ci), so CI builds the
## workspace once: `make test` runs this. Needs a running Docker engine.
compose-smoke: image-ci
	QUIVER_TAG=ci QUIVER_TESTS=tests/compose tests/api/run.sh -s

image-ci: deps
	cargo build -p quiver --bin quiver
	deploy/docker/build-image.sh $(CARGO_TARGET_DIR)/debug/quiver ci
