#!/usr/bin/env bash
# tests/c/stress.c (16 threads sharing one model, see docs/RELIABILITY.md) under
# ThreadSanitizer: libllq built with `cargo +nightly` and -Zsanitizer=thread into its own
# target directory (target-tsan/, ~6 min cold; tools/test.sh frees it afterwards unless
# LLQ_KEEP_BUILDS=1), the program
# compiled with gcc -fsanitize=thread and linked with the nightly toolchain's own TSan
# runtime (gcc 12's libtsan lacks __tsan_memcpy, which LLVM 22's instrumentation calls).
#
# Rust's std stays uninstrumented (no rust-src on the machines, so no -Zbuild-std):
# tests/c/tsan_futex.c makes std's futex sleeps visible to TSan and tools/tsan.supp
# names the few remaining std primitives TSan cannot see, each with its reason. Any
# other report fails the run, as does an error of the stress program itself.
#
#   tools/tsan-c-stress.sh                 (16 threads x 10 rounds)
#   TSAN_STRESS_ROUNDS=N tools/tsan-c-stress.sh
# Skipped (exit 0, with a message) when no nightly toolchain with the TSan runtime is
# installed; TSAN_REQUIRED=1 makes that an error.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
rounds=${TSAN_STRESS_ROUNDS:-10}
triple=x86_64-unknown-linux-gnu

skip() {
    if [ "${TSAN_REQUIRED:-0}" = 1 ]; then
        echo "tsan-c-stress: $1" >&2
        exit 1
    fi
    echo "tsan-c-stress: skipped: $1" >&2
    exit 0
}
[ "$(uname -m)" = x86_64 ] || skip "x86-64 only"
sysroot=$(rustc +nightly --print sysroot 2>/dev/null) || skip "no nightly toolchain"
runtime=$sysroot/lib/rustlib/$triple/lib/librustc-nightly_rt.tsan.a
[ -f "$runtime" ] || skip "no TSan runtime in $sysroot"
command -v llvm-symbolizer >/dev/null || skip "no llvm-symbolizer (the suppressions match function names)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# -Cunsafe-allow-abi-mismatch: std was built without the sanitizer. For TSan that only
# means std's own memory accesses are not seen (the calling convention is the same).
# --cfg llq_tsan: libllq's registry lock tells TSan what it orders (src/ffi/tsan.rs).
# --cfg crossbeam_sanitize_thread: crossbeam's deques (rayon's job queues) use release
# stores instead of the fences TSan does not model.
# CARGO_PROFILE_RELEASE_DEBUG=limited: the release profile's own debug info, whatever the
# caller set (tools/test.sh turns it off for its other builds), because the suppressions
# match frames that only debug info names once inlined.
CARGO_PROFILE_RELEASE_DEBUG=limited \
RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer --cfg llq_tsan --cfg crossbeam_sanitize_thread" \
    cargo +nightly build --release --lib --target "$triple" \
    --target-dir "$root/target-tsan" --quiet
echo "tsan-c-stress: build took $(( $(date +%s) - start )) s" >&2
libdir=$root/target-tsan/$triple/release

"${CARGO_TARGET_DIR:-$root/target}/release/llq" convert ../shared/fixtures/tiny-llama-gqa \
    -o "$work/tiny.llq" --type q8_0 >/dev/null 2>&1 || {
    cargo build --release --bin llq --quiet
    "${CARGO_TARGET_DIR:-$root/target}/release/llq" convert ../shared/fixtures/tiny-llama-gqa \
        -o "$work/tiny.llq" --type q8_0 >/dev/null
}
cc -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -fsanitize=thread -Wall -Wextra -Werror \
    -Iinclude -c tests/c/stress.c -o "$work/stress.o"
cc -O1 -g -Wall -Wextra -Werror -c tests/c/tsan_futex.c -o "$work/tsan_futex.o"
# Not -fsanitize=thread at the link: the runtime is the toolchain's, whole, and exported
# (-rdynamic) so that libllq's __tsan_* references and our syscall() resolve to it.
cc "$work/stress.o" "$work/tsan_futex.o" -o "$work/stress" \
    -L"$libdir" -lllq -Wl,-rpath,"$libdir" \
    -Wl,--whole-archive "$runtime" -Wl,--no-whole-archive -rdynamic \
    -lpthread -ldl -lm -lrt -lstdc++

run_start=$(date +%s)
status=0
RAYON_NUM_THREADS=2 \
TSAN_OPTIONS="suppressions=$root/tools/tsan.supp print_suppressions=1 halt_on_error=0 exitcode=66 history_size=4" \
    "$work/stress" "$work/tiny.llq" 16 "$rounds" >"$work/out.txt" 2>&1 || status=$?
reports=$(grep -c '^WARNING: ThreadSanitizer' "$work/out.txt" || true)
echo "tsan-c-stress: run took $(( $(date +%s) - run_start )) s" >&2
grep -E '^stress:' "$work/out.txt" >&2 || true
# How many reports each rule of tools/tsan.supp removed.
sed -n '/Matched .* suppressions/,/^stress:/p' "$work/out.txt" | grep -v '^stress:' >&2 || true
if [ "$status" -ne 0 ] || [ "$reports" -ne 0 ]; then
    cat "$work/out.txt" >&2
    echo "tsan-c-stress: FAILED: exit $status, $reports ThreadSanitizer report(s)" >&2
    exit 1
fi
echo "tsan-c-stress: clean (0 unsuppressed reports)" >&2
