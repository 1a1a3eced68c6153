#!/usr/bin/env bash
# Fuzz smoke for CI: build the fuzz crate (fuzz/, stable toolchain, no sanitizer) and run
# every target for FUZZ_SMOKE_SECS seconds (default 30) on its checked-in corpus. Exits
# non-zero when a target crashes, leaks past the RSS limit or hangs past the timeout; the
# input that did it is left in fuzz/artifacts/<target>/ (reproduce with
# `cargo fuzz run -s none -O <target> <file>`, then make it a test in tests/).
#
# New corpus entries go to a temporary directory, so the checked-in corpus is not changed.
# One fuzzer per core (FUZZ_SMOKE_JOBS, default: the number of cores): each target is a
# single-threaded libFuzzer process, so on this 2-core machine two run side by side and
# the eight 30 s smokes take about 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SMOKE_SECS:-30}
targets=(llq_open gguf hf_checkpoint tokenizer prompt_cache chat_template lora imatrix)

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

start=$(date +%s)
# -s none: no sanitizer, so the stable toolchain is enough (Rust code is memory-safe
# outside `unsafe`; the targets look for panics, aborts, hangs and runaway memory).
cargo fuzz build -s none -O
echo "fuzz-smoke: build took $(( $(date +%s) - start )) s"

bin=fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
jobs=${FUZZ_SMOKE_JOBS:-$(nproc)}
smoke() {
    local t=$1
    mkdir -p "$scratch/$t" "fuzz/artifacts/$t"
    if "$bin/$t" "$scratch/$t" "fuzz/corpus/$t" -max_total_time="$secs" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$scratch/$t.log" 2>&1; then
        : >"$scratch/$t.ok"
    fi
}
echo "fuzz-smoke: ${#targets[@]} targets for ${secs} s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
    if ((running >= jobs)); then
        wait -n || true
        running=$((running - 1))
    fi
    smoke "$t" &
    running=$((running + 1))
done
wait
failed=()
for t in "${targets[@]}"; do
    if [ ! -e "$scratch/$t.ok" ]; then
        failed+=("$t")
        tail -n 40 "$scratch/$t.log"
    fi
    grep -E '^stat::number_of_executed_units' "$scratch/$t.log" | sed "s/^/  $t /" || true
done
echo "fuzz-smoke: total $(( $(date +%s) - start )) s"
if ((${#failed[@]})); then
    echo "fuzz-smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz-smoke: ok"
