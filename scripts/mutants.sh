#!/usr/bin/env bash
# Mutation testing of the pure cores listed in .cargo/mutants.toml, with cargo-mutants: every
# mutant (a function body replaced, an operator swapped, ...) is built and the tests of its
# package run; a mutant that no test fails on is "missed". Prints the counts and the score
# (caught / (caught + missed); timeouts count as caught, unviable mutants — ones that do not
# compile — are not counted) and lists the missed mutants.
#
#   scripts/mutants.sh [cargo-mutants args...]
#   scripts/mutants.sh -F throttle.rs                     # only mutants whose name matches
#   scripts/mutants.sh --iterate                          # skip mutants caught by earlier runs
#
# It runs in place, in this checkout and its cargo target directory (a copy of the tree would
# build everything again, FAISS included): do not edit the tree while it runs. cargo-mutants
# puts the source back when it ends or is interrupted with Ctrl-C. Results: mutants.out/ (ignored
# by git). All 600-odd mutants take hours on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="$HOME/.cache/quiver"
tools="$cache/tools"
export PATH="$tools/bin:$HOME/.cargo/bin:$PATH"
version=27.1.0

if ! cargo mutants --version 2>/dev/null | grep -q "$version"; then
    echo "mutants.sh: installing cargo-mutants $version into $tools" >&2
    CARGO_TARGET_DIR="$cache/mutants-build" cargo install cargo-mutants --version "$version" \
        --locked --root "$tools" --quiet
fi

cd "$repo"
status=0
cargo mutants --in-place "$@" || status=$?
out="$repo/mutants.out"
count() { if [ -f "$out/$1.txt" ]; then grep -c . "$out/$1.txt" || true; else echo 0; fi; }
caught=$(count caught); missed=$(count missed); timeout=$(count timeout); unviable=$(count unviable)
tested=$((caught + missed + timeout))
echo
echo "mutants.sh: caught $caught, missed $missed, timeout $timeout, unviable $unviable"
if [ "$tested" -gt 0 ]; then
    echo "mutants.sh: score $((caught + timeout))/$tested = $(( (caught + timeout) * 100 / tested ))%"
fi
if [ "$missed" -gt 0 ]; then
    echo "mutants.sh: missed:"
    sed 's/^/  /' "$out/missed.txt"
fi
# cargo-mutants exits 2 when a mutant was missed, 3 on timeouts: results, not failures to run.
case "$status" in 0 | 2 | 3) exit 0 ;; *) exit "$status" ;; esac
