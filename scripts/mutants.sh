#!/usr/bin/env bash
# Mutation testing of the pure cores listed in .cargo/mutants.toml, with cargo-mutants: every
# mutant (a function body replaced, an operator swapped, ...) is built and the tests of its
# package run; a mutant that no test fails on is "missed". Prints the counts and the score
# (caught / (caught + missed); timeouts count as caught, unviable mutants — ones that do not
# compile — are not counted) and lists the missed mutants.
#
#   scripts/mutants.sh                                    # every core, about an hour on 2 cores
#   scripts/mutants.sh -F throttle.rs                     # only mutants whose name matches
#   scripts/mutants.sh -F filter.rs -- --lib              # ... and only the unit tests
#   scripts/mutants.sh --iterate                          # skip mutants caught by earlier runs
#
# Without arguments it runs two passes whose counts it adds up: the coordinator's cores against
# its unit tests and the handler tests (tests/api_handlers: validation is pinned there too),
# the node's filter index and the merge against their unit tests. The other integration tests
# (multi-node Raft, QUIC, durability) test nothing in these files and would make every mutant
# cost a minute. Mutants build without optimisation (CARGO_PROFILE_DEV_OPT_LEVEL=0): the tests
# of these cores are quick, the build is what a mutant costs.
#
# It runs in place, in this checkout and its cargo target directory (a copy of the tree would
# build everything again, FAISS included): do not edit the tree while it runs. cargo-mutants
# puts the source back when it ends or is interrupted with Ctrl-C. Results: mutants.out/ (the
# last pass; ignored by git).
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
export CARGO_PROFILE_DEV_OPT_LEVEL="${CARGO_PROFILE_DEV_OPT_LEVEL:-0}"
out="$repo/mutants.out"
count() { if [ -f "$out/$1.txt" ]; then grep -c . "$out/$1.txt" || true; else echo 0; fi; }
caught=0 missed=0 timeout=0 unviable=0 missed_list="" failed=0

# A proptest that fails against a mutant writes its seed to proptest-regressions/: the seed of a
# bug only the mutant had. After each pass those files are put back as they were before the run
# (untracked seeds someone has not committed yet are kept, the mutants' are dropped).
regressions=':(glob)*/proptest-regressions/**'
saved_regressions="$(mktemp)"
trap 'rm -f "$saved_regressions"' EXIT
git ls-files -z --others --exclude-standard -- "$regressions" | tar --null -T - -cf "$saved_regressions"
restore_regressions() {
    git clean -fdq -- "$regressions" || true
    tar -xf "$saved_regressions"
}

# One cargo-mutants run; adds its counts to the totals.
pass() {
    local status=0
    cargo mutants --in-place "$@" || status=$?
    restore_regressions
    # cargo-mutants exits 2 when a mutant was missed, 3 on timeouts: results, not failures to run.
    case "$status" in 0 | 2 | 3) ;; *) failed=$status; return ;; esac
    caught=$((caught + $(count caught))); missed=$((missed + $(count missed)))
    timeout=$((timeout + $(count timeout))); unviable=$((unviable + $(count unviable)))
    if [ -f "$out/missed.txt" ]; then missed_list+="$(cat "$out/missed.txt")"$'\n'; fi
}

if [ "$#" -gt 0 ]; then
    pass "$@"
else
    pass -F 'coordinator/src/' -- --lib --test api_handlers
    [ "$failed" -ne 0 ] || pass -F '(node|proto)/src/' -- --lib
fi
tested=$((caught + missed + timeout))
echo
echo "mutants.sh: caught $caught, missed $missed, timeout $timeout, unviable $unviable"
if [ "$tested" -gt 0 ]; then
    echo "mutants.sh: score $((caught + timeout))/$tested = $(( (caught + timeout) * 100 / tested ))%"
fi
if [ "$missed" -gt 0 ]; then
    echo "mutants.sh: missed:"
    printf '%s' "$missed_list" | sed '/^$/d; s/^/  /'
fi
exit "$failed"
