#!/usr/bin/env bash
# Runs the libFuzzer targets in fuzz/ (the sans-IO HTTP engine, without Python).
#
#   scripts/fuzz.sh [TARGET|all] [SECONDS] [libFuzzer flags...]
#
# TARGET is head, chunked or connection (default: all, one after the other); SECONDS is the time
# per target (default 60). The committed seeds in fuzz/corpus/<target>/ are read, never written:
# what libFuzzer finds goes to fuzz/target/corpus-work/<target>/ (kept between runs), crashes to
# fuzz/artifacts/<target>/. Reproduce a crash with `fuzz/target/<triple>/release/<target> FILE`.
#
# Works on stable Rust: cargo-fuzz's nightly-only flags (-Zsanitizer=address) are allowed with
# RUSTC_BOOTSTRAP=1. Uses `cargo fuzz build` when cargo-fuzz is installed, otherwise the same
# flags through plain cargo.
set -euo pipefail

cd "$(dirname "$0")/../fuzz"
TARGETS=(head chunked connection)
which_target=${1:-all}
seconds=${2:-60}
shift $(( $# > 2 ? 2 : $# ))

if [[ $which_target == all ]]; then
    run_targets=("${TARGETS[@]}")
elif [[ " ${TARGETS[*]} " == *" $which_target "* ]]; then
    run_targets=("$which_target")
else
    echo "unknown target '$which_target' (one of: ${TARGETS[*]}, all)" >&2
    exit 2
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
export RUSTC_BOOTSTRAP=1
if cargo fuzz --version >/dev/null 2>&1; then
    cargo fuzz build --release >&2
else
    # What `cargo fuzz build` passes (cargo-fuzz 0.13, address sanitizer). --target keeps the
    # flags off build scripts.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Zsanitizer=address \
-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1" \
        cargo build --release --bins --target "$triple" >&2
fi

status=0
for t in "${run_targets[@]}"; do
    work=target/corpus-work/$t
    mkdir -p "$work" "artifacts/$t"
    log=target/fuzz-$t.log
    echo "== fuzz $t for ${seconds}s" >&2
    set +e
    "target/$triple/release/$t" "$work" "corpus/$t" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=1024 -max_len=4096 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        "$@" >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [[ $rc -ne 0 ]]; then
        tail -n 60 "$log" >&2
        echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} runs; log: fuzz/$log" >&2
        status=1
    else
        echo "fuzz $t: ok, ${execs:-?} runs in ${seconds}s, corpus $(ls "$work" | wc -l) files" >&2
    fi
done
exit $status
