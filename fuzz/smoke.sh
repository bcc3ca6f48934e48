#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS (default 60) from its committed seeds and fails on the
# first crash, leak or timeout libFuzzer reports (the input is saved under fuzz/artifacts/).
# CI calls it so that a change to a parser meets the fuzzer before it lands; longer runs are
# done by hand (fuzz/README.md). Installs cargo-fuzz when missing; the stable toolchain takes
# its nightly flags through RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"handshake frame cbor views json cws_upgrade simd config"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/smoke.sh: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
export RUSTC_BOOTSTRAP=1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $TARGETS; do
    # A scratch corpus: libFuzzer writes what it finds to the first directory, and the
    # committed seeds stay small and hand-picked.
    mkdir -p "$scratch/$t"
    cp fuzz/seeds/"$t"/* "$scratch/$t/"
    echo "== fuzz $t for ${SECONDS_EACH}s"
    if ! cargo fuzz run -O "$t" "$scratch/$t" -- -max_total_time="$SECONDS_EACH" \
        -rss_limit_mb=2048 -print_final_stats=1 2>"$scratch/$t.log"; then
        tail -60 "$scratch/$t.log"
        echo "fuzz/smoke.sh: $t failed; the input is under fuzz/artifacts/$t/" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done ' "$scratch/$t.log" | tail -2
done
