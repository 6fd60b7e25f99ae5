#!/usr/bin/env bash
# Size experiments behind the "floors" in examples/firmware/README.md
# (issue 11): how much of the library's footprint on the firmware bring-up
# each behaviour and the parallel group take. By hand only, not in CI.
#
# Each experiment builds `firmware` for thumbv7m-none-eabi (compact
# profile, semihosting; the toolchain and profile of scripts/firmware.sh)
# with zero or more of the patches in this directory applied to the core,
# and prints `.text`, `.data + .bss`, the transaction's future and, when
# the scenarios still run to their end, the stack high-water mark. The
# patches break behaviour on purpose (that is what they measure), so the
# scenario checks of a patched build fail: only its sizes mean anything.
# Every patch is reverted after its build, also on failure.
#
#   no-retries.patch     every attempt is the last: no retry, no backoff,
#                        no jitter (the step engine, the group and the
#                        rollback loop)
#   no-timeouts.patch    no attempt or rollback has a timeout (no timer
#                        raced against it)
#   no-step-times.patch  no clock reading for the records' times
#
# `sequential-buses` (a feature of the firmware) builds the two buses as
# two sequential steps instead of a parallel group.
#
# Usage: bash examples/firmware/experiments/measure.sh   (about 2 minutes
# once the thumb build of scripts/firmware.sh is cached; needs a clean
# core/ work tree)
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
HERE=$ROOT/examples/firmware/experiments
OUT=$ROOT/target/firmware-experiments
ELF=$OUT/thumbv7m-none-eabi/release/firmware

if ! git diff --quiet -- core; then
    echo "core/ has uncommitted changes: commit or stash them first (the patches apply to a clean core)" >&2
    exit 1
fi

applied=()
revert() {
    local p
    for p in "${applied[@]}"; do
        git apply -R "$HERE/$p.patch"
    done
    applied=()
}
trap revert EXIT

measure() {
    local label=$1 features=$2
    shift 2
    local p
    for p in "$@"; do
        git apply "$HERE/$p.patch"
        applied+=("$p")
    done
    local args=(build --release --bin firmware --target thumbv7m-none-eabi)
    [[ -n $features ]] && args+=(--features "$features")
    (cd "$ROOT/examples/firmware" &&
        PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$OUT \
            CARGO_TERM_COLOR=never /usr/bin/cargo "${args[@]}" --quiet 2>/dev/null)
    revert
    local text ram run future stack
    text=$(arm-none-eabi-size -A "$ELF" | awk '$1 == ".text" { print $2 }')
    ram=$(arm-none-eabi-size -A "$ELF" | awk '$1 == ".data" || $1 == ".bss" { n += $2 } END { print n }')
    run=$(timeout 60 qemu-system-arm -machine mps2-an385 -nographic \
        -semihosting-config enable=on,target=native -icount shift=5 -kernel "$ELF" </dev/null 2>&1 || true)
    future=$(sed -n 's/.*transaction future: \([0-9]*\) bytes.*/\1/p' <<<"$run" | head -1)
    stack=$(sed -n 's/.*stack high-water mark: \([0-9]*\) bytes.*/\1/p' <<<"$run" | head -1)
    printf '| %-52s | %6s | %5s | %6s | %5s |\n' "$label" "$text" "$ram" "${future:--}" "${stack:--}"
}

printf '| %-52s | %6s | %5s | %6s | %5s |\n' "build (thumbv7m, compact)" ".text" "RAM" "future" "stack"
measure "as it is" ""
measure "no retries" "" no-retries
measure "no timeouts" "" no-timeouts
measure "no step times" "" no-step-times
measure "none of the three" "" no-retries no-timeouts no-step-times
measure "sequential buses (no group)" sequential-buses
measure "sequential buses, none of the three" sequential-buses no-retries no-timeouts no-step-times
