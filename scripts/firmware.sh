#!/usr/bin/env bash
# The firmware CI step, self-contained (`.ci/run` calls it; it also runs by
# hand from any directory):
#
#   1. installs what it needs if missing: Debian's rustc-web, cargo-web and
#      rust-web-src (a compiler that can build `core` for thumb targets with
#      -Zbuild-std, since rustup cannot download them here), GNU binutils for
#      ARM (the linker, `size`, `nm`), QEMU, and `defmt-print`;
#   2. proves the libraries are no_std: transaction-manager-core,
#      transaction-manager-embassy, the facade (default-features = false,
#      features = ["embassy"]) and transaction-manager-flash build for
#      thumbv7m-none-eabi against `core` alone, so a dependency that pulls
#      in `std` fails here;
#   3. builds examples/firmware for thumbv7m-none-eabi (QEMU mps2-an385) and
#      thumbv7em-none-eabihf (mps2-an386), twice each: semihosting text and
#      defmt — both binaries each time: `firmware` (the bring-up through
#      transaction-manager) and `hand-written` (the same without it); and
#      per target a third, `journaled` (feature `journal`): the bring-up
#      journaled to flash (transaction-manager-flash on a RAM NorFlash);
#   4. runs every ELF file in QEMU (under `timeout`), decoding the defmt
#      ones with defmt-print; each checks its own scenarios and exits 0 only
#      if all ended as expected — any other status fails this script;
#      `journaled` cuts the power at every write of the bring-up, reboots,
#      recovers and checks every peripheral is off again, in reverse order;
#   5. prints the footprint table (library vs hand-written, and journaled vs
#      firmware): sections, and
#      per target and output the stack high-water mark (the stack is painted
#      at reset; each binary prints how much of it the four scenarios used),
#      .text, .data + .bss and the transaction's future;
#   6. checks every one of those values against examples/firmware/budget.toml
#      and fails, naming the metric, the value and the budget, on any over.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
FIRMWARE=$ROOT/examples/firmware
OUT=$ROOT/target/firmware          # one target dir for every thumb build
ELF_DIR=$OUT/elf
LOG_DIR=$OUT/logs
# board for each target
declare -A BOARD=([thumbv7m-none-eabi]=mps2-an385 [thumbv7em-none-eabihf]=mps2-an386)
TARGETS=(thumbv7m-none-eabi thumbv7em-none-eabihf)
# The library's profiles: `semihosting` and `defmt` are the compact profile
# (no error texts kept: `default-features = false`, `embassy`), printing
# through semihosting or defmt; `full` keeps error texts (`error-text`), with
# semihosting output.
FLAVOURS=(semihosting defmt full)
QEMU_TIMEOUT=60                     # a run takes about half a second
START=$SECONDS

step() { printf '\n==> %s\n' "$*"; }
fail() {
    echo "FAILED: $*" >&2
    exit 1
}

# Debian's toolchain, not the rustup proxies in ~/.cargo/bin that shadow it;
# RUSTC_BOOTSTRAP lets its stable cargo use -Zbuild-std. Warnings are errors
# (registry dependencies are built with --cap-lints, so this holds our code).
thumb_cargo() {
    PATH=/usr/bin:$PATH RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 \
        RUSTFLAGS="-D warnings" CARGO_TARGET_DIR=$OUT CARGO_TERM_COLOR=never \
        /usr/bin/cargo "$@"
}

step "toolchain"
missing=()
for pkg in rustc-web cargo-web rust-web-src binutils-arm-none-eabi qemu-system-arm; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    sudo=""
    [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
if ! command -v defmt-print >/dev/null; then
    # A host tool: any cargo builds it (about 100 s on 2 cores).
    echo "installing defmt-print"
    cargo install --locked --quiet defmt-print
fi
# First lines only, without `| head`: a tool writing into a closed pipe
# fails, and pipefail would fail the script with it.
for tool in /usr/bin/rustc /usr/bin/cargo qemu-system-arm arm-none-eabi-ld defmt-print; do
    version=$("$tool" --version)
    echo "${version%%$'\n'*}"
done

step "format (examples/firmware)"
if cargo fmt --version >/dev/null 2>&1; then
    cargo fmt --manifest-path "$FIRMWARE/Cargo.toml" --check
else
    echo "cargo fmt not available: skipped"
fi

step "no_std: the libraries build for thumbv7m-none-eabi against core alone"
for args in "-p transaction-manager-core" \
    "-p transaction-manager-embassy" \
    "-p transaction-manager --no-default-features --features embassy" \
    "-p transaction-manager-flash"; do
    echo "--- cargo build -Zbuild-std=core --target thumbv7m-none-eabi $args"
    # shellcheck disable=SC2086 # $args is a list of arguments
    thumb_cargo build --quiet --locked --release -Zbuild-std=core --target thumbv7m-none-eabi $args
done
echo "no_std build passed"

step "build the firmware (both targets; profiles: compact with semihosting or defmt output, full)"
mkdir -p "$ELF_DIR" "$LOG_DIR"
for target in "${TARGETS[@]}"; do
    for flavour in "${FLAVOURS[@]}"; do
        features=()
        [[ $flavour == defmt ]] && features=(--features defmt)
        [[ $flavour == full ]] && features=(--features error-text)
        echo "--- $target, $flavour"
        (cd "$FIRMWARE" && thumb_cargo build --quiet --locked --release --bins \
            --target "$target" "${features[@]}")
        mkdir -p "$ELF_DIR/$target/$flavour"
        for bin in firmware hand-written; do
            cp "$OUT/$target/release/$bin" "$ELF_DIR/$target/$flavour/$bin"
        done
    done
    # The bring-up journaled to flash, with a power cut at every write: its
    # own binary (feature `journal`), compact profile, semihosting output.
    echo "--- $target, journaled (flash journal, power cuts)"
    (cd "$FIRMWARE" && thumb_cargo build --quiet --locked --release --bin journaled \
        --target "$target" --features journal)
    cp "$OUT/$target/release/journaled" "$ELF_DIR/$target/semihosting/journaled"
done

qemu() { # target elf
    timeout "$QEMU_TIMEOUT" qemu-system-arm -machine "${BOARD[$1]}" -nographic \
        -semihosting-config enable=on,target=native -icount shift=5 -kernel "$2" </dev/null
}

step "run in QEMU: every scenario must end as expected"
for target in "${TARGETS[@]}"; do
    for flavour in "${FLAVOURS[@]}"; do
        for bin in firmware hand-written; do
            elf=$ELF_DIR/$target/$flavour/$bin
            log=$LOG_DIR/$target-$flavour-$bin.log
            echo "--- $bin on ${BOARD[$target]} ($target, $flavour)"
            if [[ $flavour == defmt ]]; then
                # defmt-print reads until QEMU exits, so it never stops early.
                set +e
                qemu "$target" "$elf" | defmt-print -e "$elf" >"$log" 2>&1
                statuses=("${PIPESTATUS[@]}")
                set -e
                status=${statuses[0]}
                ((statuses[1] == 0)) || fail "defmt-print exited with ${statuses[1]} ($log)"
            else
                set +e
                qemu "$target" "$elf" >"$log" 2>&1
                status=$?
                set -e
            fi
            if [[ $bin == firmware && $flavour == semihosting ]]; then
                cat "$log"
            else
                grep -E '^(.* )?(scenarios:|UNEXPECTED|panic)' "$log" || true
            fi
            if ((status == 124)); then
                fail "$bin on ${BOARD[$target]} ($flavour) still running after ${QEMU_TIMEOUT} s; log: $log"
            elif ((status != 0)); then
                fail "$bin on ${BOARD[$target]} ($flavour) exited with status $status; log: $log"
            fi
        done
    done
done

step "run in QEMU: power cut at every write of the journaled bring-up, recovered at the next boot"
for target in "${TARGETS[@]}"; do
    elf=$ELF_DIR/$target/semihosting/journaled
    log=$LOG_DIR/$target-semihosting-journaled.log
    echo "--- journaled on ${BOARD[$target]} ($target)"
    set +e
    qemu "$target" "$elf" >"$log" 2>&1
    status=$?
    set -e
    # Every cut point's line only when one went wrong: the summary otherwise.
    grep -v '^cut after write' "$log" || true
    grep -E 'UNEXPECTED|panic' "$log" || true
    if ((status == 124)); then
        fail "journaled on ${BOARD[$target]} still running after ${QEMU_TIMEOUT} s; log: $log"
    elif ((status != 0)); then
        fail "journaled on ${BOARD[$target]} exited with status $status; log: $log"
    fi
    cuts=$(grep -c '^cut after write .*, \(committed, left on\|all off, in reverse order\)$' "$log") || true
    echo "$cuts cut points recovered as expected"
    ((cuts > 0)) || fail "journaled on ${BOARD[$target]}: no cut point ran; log: $log"
done

step "footprint: transaction-manager vs the same bring-up written by hand"
echo "opt-level \"s\", fat LTO, codegen-units 1, panic abort. flash = .vector_table + .text + .rodata;"
echo "RAM = .data + .bss (.bss holds the embassy task, and so the transaction's future)."
section() { # elf name -> size of that section (0 if absent)
    arm-none-eabi-size -A "$1" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}
printf '\n%-22s %-12s %-13s %7s %7s %7s %7s %7s %7s\n' \
    target output binary flash .text .rodata .data .bss RAM
for target in "${TARGETS[@]}"; do
    for flavour in "${FLAVOURS[@]}"; do
        declare -A size=()
        for bin in firmware hand-written; do
            elf=$ELF_DIR/$target/$flavour/$bin
            for s in .vector_table .text .rodata .data .bss; do
                size[$bin$s]=$(section "$elf" "$s")
            done
            size[${bin}flash]=$((size[$bin.vector_table] + size[$bin.text] + size[$bin.rodata]))
            size[${bin}ram]=$((size[$bin.data] + size[$bin.bss]))
            printf '%-22s %-12s %-13s %7d %7d %7d %7d %7d %7d\n' "$target" "$flavour" "$bin" \
                "${size[${bin}flash]}" "${size[$bin.text]}" "${size[$bin.rodata]}" \
                "${size[$bin.data]}" "${size[$bin.bss]}" "${size[${bin}ram]}"
        done
        delta() { echo $((size[firmware$1] - size[hand-written$1])); }
        printf '%-22s %-12s %-13s %+7d %+7d %+7d %+7d %+7d %+7d\n' "$target" "$flavour" \
            "library cost" "$(delta flash)" "$(delta .text)" "$(delta .rodata)" "$(delta .data)" \
            "$(delta .bss)" "$(delta ram)"
        unset size
    done
done

# The issue-11 table, per target and output: stack high-water mark (each
# firmware prints it after its four scenarios; the stack is painted at
# reset by cortex-m-rt's `paint-stack`), .text, .data + .bss, and the size
# of the transaction's future (hand-written: its bring-up future).
logged() { # log "text before the number" -> the number (fails if absent)
    local found
    found=$(grep -m 1 -o "$2: [0-9]*" "$1") || true
    [[ -n $found ]] || fail "no \"$2\" line in $1"
    echo "${found##* }"
}
declare -A measured=()
for target in "${TARGETS[@]}"; do
    for flavour in "${FLAVOURS[@]}"; do
        for bin in firmware hand-written; do
            elf=$ELF_DIR/$target/$flavour/$bin
            log=$LOG_DIR/$target-$flavour-$bin.log
            key=$target.$flavour.$bin
            measured[$key.stack]=$(logged "$log" "stack high-water mark")
            measured[$key.text]=$(section "$elf" .text)
            measured[$key.ram]=$(($(section "$elf" .data) + $(section "$elf" .bss)))
            if [[ $bin == firmware ]]; then
                measured[$key.future]=$(logged "$log" "transaction future")
            else
                measured[$key.future]=$(logged "$log" "bring-up future")
            fi
        done
    done
    elf=$ELF_DIR/$target/semihosting/journaled
    log=$LOG_DIR/$target-semihosting-journaled.log
    key=$target.semihosting.journaled
    measured[$key.stack]=$(logged "$log" "stack high-water mark")
    measured[$key.text]=$(section "$elf" .text)
    measured[$key.ram]=$(($(section "$elf" .data) + $(section "$elf" .bss)))
    measured[$key.future]=$(logged "$log" "transaction future")
done
declare -A label=([stack]="stack high-water mark" [text]=".text" [ram]=".data + .bss" [future]="transaction future")
METRICS=(stack text ram future)
for target in "${TARGETS[@]}"; do
    for flavour in "${FLAVOURS[@]}"; do
        printf '\n%s (%s), %s output, bytes:\n' "$target" "${BOARD[$target]}" "$flavour"
        printf '| %-22s | %12s | %9s | %9s |\n' "" hand-written library cost
        printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..13}):" \
            "$(printf -- '-%.0s' {1..10}):" "$(printf -- '-%.0s' {1..10}):"
        for metric in "${METRICS[@]}"; do
            hand=${measured[$target.$flavour.hand-written.$metric]}
            lib=${measured[$target.$flavour.firmware.$metric]}
            printf '| %-22s | %12d | %9d | %+9d |\n' "${label[$metric]}" "$hand" "$lib" $((lib - hand))
        done
    done
done

# The journal's cost: the journaled binary against `firmware` (both compact,
# semihosting). It includes the power-cut harness (the cut loop, the
# reboot, the checks) and the RAM flash (3 KiB of .bss) besides the journal.
for target in "${TARGETS[@]}"; do
    printf '\n%s (%s), journaled to flash (power-cut scenarios) against firmware, bytes:\n' "$target" "${BOARD[$target]}"
    printf '| %-22s | %12s | %9s | %9s |\n' "" firmware journaled cost
    printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..24})" "$(printf -- '-%.0s' {1..13}):" \
        "$(printf -- '-%.0s' {1..10}):" "$(printf -- '-%.0s' {1..10}):"
    for metric in "${METRICS[@]}"; do
        base=${measured[$target.semihosting.firmware.$metric]}
        lib=${measured[$target.semihosting.journaled.$metric]}
        printf '| %-22s | %12d | %9d | %+9d |\n' "${label[$metric]}" "$base" "$lib" $((lib - base))
    done
done

# Every measured value above has a budget; one above its budget fails CI.
# FIRMWARE_BUDGET=other.toml checks against another file (to try a change).
BUDGET_FILE=${FIRMWARE_BUDGET:-$FIRMWARE/budget.toml}
step "budgets (${BUDGET_FILE#"$ROOT"/})"
[[ -f $BUDGET_FILE ]] || fail "no budget file: $BUDGET_FILE"
# A small subset of TOML: `[table.name]` headers and `key = integer` lines,
# `#` comments. Prints "table.name.key value" per line.
budget_lines=$(awk '
    { sub(/#.*/, "") }
    /^[[:space:]]*\[[^]]+\][[:space:]]*$/ { gsub(/[][[:space:]"]/, ""); table = $0; next }
    /=/ {
        split($0, kv, "=")
        key = kv[1]; value = kv[2]
        gsub(/[[:space:]"]/, "", key); gsub(/[[:space:]_]/, "", value)
        if (value !~ /^[0-9]+$/) { print "not a byte count: " table "." key " = " value > "/dev/stderr"; exit 1 }
        print table "." key, value
    }' "$BUDGET_FILE") || fail "cannot read $BUDGET_FILE"
declare -A budget=()
while read -r key value; do
    budget[$key]=$value
done <<<"$budget_lines"
over=0
printf '%-54s %9s %9s %9s\n' metric measured budget headroom
for key in $(printf '%s\n' "${!measured[@]}" | sort); do
    value=${measured[$key]}
    limit=${budget[$key]:-}
    if [[ -z $limit ]]; then
        echo "NO BUDGET: $key (measured $value bytes) has no line in $BUDGET_FILE" >&2
        over=$((over + 1))
        continue
    fi
    printf '%-54s %9d %9d %+9d\n' "$key" "$value" "$limit" $((limit - value))
    if ((value > limit)); then
        echo "OVER BUDGET: $key (${label[${key##*.}]}) is $value bytes, budget $limit bytes (+$((value - limit)))" >&2
        over=$((over + 1))
    fi
done
for key in "${!budget[@]}"; do
    [[ -n ${measured[$key]:-} ]] || echo "warning: budget $key matches nothing measured (typo?)"
done
((over == 0)) || fail "$over footprint value(s) over budget or without one (see above; $BUDGET_FILE says how to change a budget)"
echo "every value within its budget"
printf '\nfirmware step passed in %d s\n' $((SECONDS - START))
