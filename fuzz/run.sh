#!/usr/bin/env bash
# Run every fuzz target for FUZZ_SECONDS each (default 60). Called by `make fuzz`.
#
#   FUZZ_SECONDS=300 fuzz/run.sh            # all targets, 5 min each
#   fuzz/run.sh request_parser router       # only these
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly compiler; on a stable toolchain
# RUSTC_BOOTSTRAP=1 is set so cargo-fuzz's -Z flags are accepted. Seeds in fuzz/corpus/<target>
# are read, never written: new inputs go to fuzz/target/corpus/<target>. Crashes go to
# fuzz/artifacts/<target>/; turn each into a regression test in tests/hostile.rs or
# tests/properties.rs.
set -euo pipefail
cd "$(dirname "$0")"
secs="${FUZZ_SECONDS:-60}"
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(request_parser reply_scanner config router)

if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed. Install it with:  cargo install cargo-fuzz" >&2
    exit 2
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi

status=0
summary=()
for t in "${targets[@]}"; do
    work="target/corpus/$t"
    mkdir -p "$work" "artifacts/$t"
    log="target/fuzz-$t.log"
    echo "== $t: ${secs}s (log: fuzz/$log)"
    set +e
    cargo fuzz run "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -dict=resp.dict -max_len=4096 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    grep -E '^(#[0-9]+.*DONE|==[0-9]+==|SUMMARY|Done |error)' "$log" || true
    if [ "$rc" -ne 0 ]; then tail -30 "$log"; fi
    set -e
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    if [ "$rc" -ne 0 ]; then
        status=1
        summary+=("$t: FAILED (exit $rc) after $execs executions; see fuzz/$log and fuzz/artifacts/$t/")
    else
        summary+=("$t: ok, $execs executions in ${secs}s")
    fi
done
echo
printf '%s\n' "${summary[@]}"
exit $status
