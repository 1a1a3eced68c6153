#!/usr/bin/env bash
# llq's test suite, as CI runs it: install prerequisites, then
#   1. every test on x86-64 with the best kernel level,
#   2. the kernel-dependent tests again with each other kernel level this CPU has forced
#      (LLQ_KERNEL; real-model bounds on the first windows of the text),
#   3. the C example and the misuse program under valgrind memcheck, the stress program
#      under ThreadSanitizer,
#   4. AArch64 under qemu (Pi 4 / Pi 5 / i8mm CPUs),
#   5. a short smoke of every fuzz target (tools/fuzz-smoke.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup.sh

# The suite's binaries need no debug info (the release profile keeps line tables for
# profilers): without it the x86-64 build is about half the size.
export CARGO_PROFILE_RELEASE_DEBUG=false

# The largest step on disk is the first two: the x86-64 build and the models the tests
# convert into target/tmp (~1.5 GB); each later step's build goes when the step is done
# (done_with below). Say so up front rather than fail on ENOSPC half an hour in.
need_gb=5
free_gb=$(df -P --block-size=1G . | awk 'NR==2 {print $4}')
if [ "$free_gb" -lt "$need_gb" ]; then
  echo "warning: $free_gb GB free on $(df -P . | awk 'NR==2 {print $6}'); the suite needs about $need_gb GB" >&2
fi

# A step's own build directory is of no use once the step has passed, and CI runs on a
# fresh clone whose disk may be small (one run ran out of space in the last step, the fuzz
# build, with every earlier step's builds still on disk): each goes when its step is done.
# LLQ_KEEP_BUILDS=1 keeps them, for a developer who runs the suite again.
done_with() {
  [ "${LLQ_KEEP_BUILDS:-0}" = 1 ] && return 0
  local d
  for d in "$@"; do
    [ -e "$d" ] || continue
    echo "== freeing $d ($(du -sh "$d" | cut -f1)); $(df -P --block-size=1M . | awk 'NR==2 {print $4}') MB were free" >&2
    rm -rf "$d"
  done
}

# Models converted by the tests are shared by every test binary and kernel level of this
# run (tests/common: every kernel level's encoders write the same bytes), converted once each.
export LLQ_TEST_MODELS="$PWD/target/tmp/models"
rm -rf "$LLQ_TEST_MODELS"

echo "== x86-64, default kernel level: every test" >&2
cargo test --release --all-targets

# Every level but the best one, which step 1 already ran: the tests whose results depend on
# the kernels (kernel-vs-scalar checks, forward passes against the fixtures' references,
# the KV cache, allocation-free steady state, and the real model's KL/PPL bounds on the
# first windows of the text: LLQ_TEST_QUICK). Tokenizers, file formats, the command line
# and the C API's contract do not depend on the level and ran once above.
levels=$(cargo run --release --quiet -- info --kernels)
kernel_tests=(--lib --test kernels --test hf_fixtures --test gguf_rope_freqs --test kv_cache
              --test kv_alloc --test matmul_alloc --test smollm2 --test gemma3 --test qwen)
# In those binaries, the tests of conversion, signals and input handling run no kernel.
level_independent=(--skip run_takes_a_gguf_file --skip interrupted_convert_leaves_nothing
                   --skip tokenizer_matches_llamacpp
                   --skip cli_chat_stops_reading_an_endless_line
                   --skip f32_conversion_reproduces_source_weights
                   --skip cli_prompt_cache_saves_loads_and_ignores_bad_files
                   --skip kv_cache_larger_than_memory_is_an_error)
# The scalar level gets the shortest real-model checks (LLQ_TEST_QUICK=2: one window of
# text, one prompt; tests/common/mod.rs): its kernels run ~14x slower than the SIMD ones
# (7 of the suite's 34 minutes went to it with LLQ_TEST_QUICK=1), and they are the
# reference that tests/kernels.rs compares every other level with element by element.
for level in $(echo "$levels" | tr ' ' '\n' | sed '$d'); do
  echo "== x86-64, LLQ_KERNEL=$level: kernel-dependent tests" >&2
  quick=1
  [ "$level" = scalar ] && quick=2
  LLQ_KERNEL=$level LLQ_TEST_QUICK=$quick cargo test --release "${kernel_tests[@]}" -- "${level_independent[@]}"
done

# The real models' conversions are read by no later step (the AArch64 tests convert the
# tiny fixtures they need).
done_with "$LLQ_TEST_MODELS"

echo "== C API under valgrind" >&2
tools/valgrind-c-example.sh

# The 16-thread stress program under ThreadSanitizer (nightly toolchain; skipped with a
# message when none is installed). ~5 s of run; the instrumented library is built into
# target-tsan/ (about 3 CPU-minutes cold, 1-2 min after a change to llq: LLQ_KEEP_BUILDS=1
# keeps it).
echo "== C API stress under ThreadSanitizer" >&2
tools/tsan-c-stress.sh

# The x86-64 release build (tests, llq, libllq) was the last step's.
done_with target-tsan target/release

echo "== AArch64 under qemu" >&2
tools/test-aarch64.sh
done_with target/aarch64-unknown-linux-gnu

# Every fuzz target for a 30 s smoke on its checked-in corpus, one per core
# (docs/RELIABILITY.md has the campaigns); a crash fails the run and leaves its input in
# fuzz/artifacts/.
echo "== fuzz smoke" >&2
tools/fuzz-smoke.sh
done_with fuzz/target
