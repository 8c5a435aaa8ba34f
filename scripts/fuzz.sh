#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer) for SECONDS each and prints a table of
# executions and crashes; exits 1 if any target crashed (its input is in fuzz/artifacts/TARGET/).
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
# Seeds: the requests the coordinator's handler tests send and the control-plane messages of its
# unit tests (written with QUIVER_FUZZ_SEEDS), collected first. The growing corpus and the build
# live under ~/.cache/quiver/fuzz. Installs cargo-fuzz into ~/.cache/quiver/tools if missing.
# Stable Rust: no sanitizer (the fuzzed code is safe Rust); panics, aborts, stack overflows,
# timeouts and out-of-memory are crashes.
set -euo pipefail

seconds="${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}"
shift
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$HOME/.cache/quiver"
work="$cache/fuzz"
tools="$cache/tools"
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(api_request http_raw node_rpc control_rpc auth_parsers)

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz into $tools" >&2
    CARGO_TARGET_DIR="$cache/cargo-fuzz-build" cargo install cargo-fuzz --locked --root "$tools" --quiet
fi

cd "$repo"
echo "fuzz.sh: collecting seeds from the test suites" >&2
rm -rf "$work/seeds"
QUIVER_FUZZ_SEEDS="$work/seeds" cargo test --quiet -p quiver-coordinator --lib --test api_handlers \
    >/dev/null

export CARGO_TARGET_DIR="$cache/fuzz-target"
echo "fuzz.sh: building the fuzz targets" >&2
cargo fuzz build --sanitizer none -O >&2

failed=0
summary=()
for target in "${targets[@]}"; do
    mkdir -p "$work/corpus/$target" "$work/seeds/$target"
    log="$work/$target.log"
    echo "fuzz.sh: $target for ${seconds}s" >&2
    status=ok
    if ! cargo fuzz run --sanitizer none -O "$target" "$work/corpus/$target" "$work/seeds/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        status=CRASH
        failed=1
        grep -E "panicked|ERROR|SUMMARY|Test unit written" "$log" | head -8 >&2 || true
    fi
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" | tail -1)
    corpus=$(ls "$work/corpus/$target" | wc -l)
    summary+=("$(printf '%-14s %8ss %12s %8s  %s' "$target" "$seconds" "${runs:-?}" "$corpus" "$status")")
done

printf '%-14s %9s %12s %8s  %s\n' target time executions corpus result
printf '%s\n' "${summary[@]}"
exit "$failed"
