#!/usr/bin/env bash
# llq's test suite, as CI runs it: install prerequisites, then
#   1. every test on x86-64 with the best kernel level,
#   2. the suite again with each other kernel level this CPU has forced (LLQ_KERNEL),
#   3. the C example and the misuse program under valgrind memcheck,
#   4. AArch64 under qemu (Pi 4 / Pi 5 / i8mm CPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh

# The builds (x86-64 and AArch64, ~5 GB) and the converted models the tests keep in
# target/tmp (~1.5 GB) need room; say so up front rather than fail on ENOSPC an hour in.
need_gb=8
free_gb=$(df -P --block-size=1G . | awk 'NR==2 {print $4}')
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "warning: $free_gb GB free on $(df -P . | awk 'NR==2 {print $6}'); the suite needs about $need_gb GB" >&2
fi

echo "== x86-64, default kernel level" >&2
cargo test --release --all-targets

# Every level but the best one, which step 1 already ran: every test binary, including
# the SmolLM2 real-model tests (with scalar kernels they take ~21 minutes here: four
# perplexity runs over 5k tokens).
levels=$(cargo run --release --quiet -- info --kernels)
tests=$(cd tests && ls *.rs | sed 's/\.rs$//')
for level in $(echo "$levels" | tr ' ' '\n' | sed '$d'); do
  echo "== x86-64, LLQ_KERNEL=$level" >&2
  args=()
  for t in $tests; do
    args+=(--test "$t")
  done
  LLQ_KERNEL=$level cargo test --release --lib "${args[@]}"
done

echo "== C API under valgrind" >&2
tools/valgrind-c-example.sh

echo "== AArch64 under qemu" >&2
tools/test-aarch64.sh
