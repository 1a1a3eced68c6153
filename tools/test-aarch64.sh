#!/usr/bin/env bash
# Run the kernel tests (tests/kernels.rs, tests/kernels_coded.rs) for aarch64 under
# qemu-user with three CPU models, proving that each picks the expected level by default
# and that every level it offers matches the scalar reference:
#   cortex-a72 → neon (Raspberry Pi 4: no dotprod), cortex-a76 → dotprod, max → i8mm.
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu,
# libc6-dev-arm64-cross, qemu-user (linker and runner are set in .cargo/config.toml).
# ALL=1 also runs the whole test suite under `max`.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
# The cross-test profile (Cargo.toml): llq optimized, its dependencies at opt-level 1 and
# no debug info, to cut the cross build (5 min in the `test` profile on the CI machine);
# the kernels are what is tested here.
profile=(--profile cross-test)
kernel_cpu=(--test kernels --test kernels_coded --test hf_fixtures --test qwen)
once=(--test tokenizer_fixtures --test format --test gguf_hostile --test gguf_dequant)
# Every binary in one build, so cargo compiles them in parallel.
cargo test "${profile[@]}" --target "$target" "${kernel_cpu[@]}" "${once[@]}" --no-run
for pair in cortex-a72:neon cortex-a76:dotprod max:i8mm; do
    cpu=${pair%%:*} want=${pair##*:}
    echo "== QEMU_CPU=$cpu (expect $want)"
    start=$(date +%s.%N)
    QEMU_CPU=$cpu LLQ_EXPECT_KERNEL=$want cargo test -q "${profile[@]}" --target "$target" --test kernels \
        --test kernels_coded -- --nocapture 2>&1 | grep -E "available kernel levels|selected kernel level|test result|panicked|FAILED"
    test "${PIPESTATUS[0]}" -eq 0
    echo "   $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s"
    # The fixture logits vs transformers, and the tiny Qwen2/Qwen3 vs llama.cpp, under each
    # CPU model: they hold the whole forward pass (biases and per-head norms included) on
    # each ARM kernel level to the references.
    echo "== hf_fixtures and qwen, QEMU_CPU=$cpu"
    QEMU_CPU=$cpu cargo test -q "${profile[@]}" --target "$target" --test hf_fixtures --test qwen
done
# Tokenizers and file formats run no kernel: once, on the oldest CPU model (ARM's
# alignment and byte order under the parsers).
echo "== fixture tests, QEMU_CPU=cortex-a72"
QEMU_CPU=cortex-a72 cargo test -q "${profile[@]}" --target "$target" "${once[@]}"
if [ "${ALL:-0}" = 1 ]; then
    echo "== whole suite, QEMU_CPU=max"
    QEMU_CPU=max cargo test -q "${profile[@]}" --target "$target"
fi
