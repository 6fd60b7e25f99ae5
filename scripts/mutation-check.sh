#!/usr/bin/env bash
# The test net must catch known-wrong engines. Each patch in
# scripts/mutations/ breaks one promise of the engine on purpose (a
# regression that once passed the whole suite, or a hole that was fixed);
# this script applies them one at a time, runs the tests that must catch
# it, and fails if a mutant passes. The work tree is restored after each.
#
# Usage: bash scripts/mutation-check.sh [patch ...]   (default: all)
# It edits core/src in place while it runs: do not edit or commit meanwhile.
# Patches apply with one line of context (-C1), so that unrelated edits near
# a mutated line do not break them; one whose lines changed fails loudly
# ("no longer applies"): regenerate it from a hand edit with `git diff`.
# A patch may name the test files that catch it on a line before its first
# `diff` (git apply ignores it), e.g. `# tests: durability journal`: only
# those are built and run for it, which keeps this check within CI's time.
# Without the line, every file in ALL_TESTS runs.
set -euo pipefail
cd "$(dirname "$0")/.."

FEATURES=tokio,smol,embassy,log,tracing,serde,metrics
# The test files run against a patch without a `# tests:` line.
ALL_TESTS=(manual_clock properties tokio journal journal_properties durability decision api)

patches=("$@")
if [ ${#patches[@]} -eq 0 ]; then
    patches=(scripts/mutations/*.patch)
fi

applied=""
restore() {
    if [ -n "$applied" ]; then
        git apply -C1 -R "$applied"
        applied=""
    fi
}
trap restore EXIT

if ! git diff --quiet -- core/src; then
    echo "core/src has uncommitted changes: commit or stash them first" >&2
    exit 2
fi

survivors=0
for patch in "${patches[@]}"; do
    name=$(basename "$patch" .patch)
    if ! git apply -C1 --check "$patch" 2>/dev/null; then
        echo "mutation $name no longer applies to the engine: update the patch" >&2
        exit 2
    fi
    git apply -C1 "$patch"
    applied="$patch"
    listed=$(sed -n '/^diff /q; s/^# tests: *//p' "$patch")
    TESTS=()
    for test in ${listed:-${ALL_TESTS[*]}}; do
        TESTS+=(--test "$test")
    done
    # Build first, so that a mutant that does not compile is reported as
    # such instead of as "caught".
    if ! cargo test --quiet --features "$FEATURES" "${TESTS[@]}" --no-run >/dev/null 2>&1; then
        echo "mutation $name does not compile: update the patch" >&2
        exit 2
    fi
    if TM_PROPTEST_CASES=${TM_PROPTEST_CASES:-1000} cargo test --quiet --features "$FEATURES" "${TESTS[@]}" >/tmp/mutant-$$.log 2>&1; then
        echo "SURVIVED: $name (no test failed)"
        survivors=$((survivors + 1))
    else
        caught=$(grep -E '^    [a-z_]+$' /tmp/mutant-$$.log | sort -u | tr -d ' ' | paste -sd, -)
        echo "caught:   $name (by: ${caught:-see log})"
    fi
    restore
done
rm -f /tmp/mutant-$$.log
if [ "$survivors" -gt 0 ]; then
    echo "$survivors mutation(s) survived the test net"
    exit 1
fi
echo "every mutation was caught"
