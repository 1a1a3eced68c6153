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
cargo test --target "$target" --test kernels --test kernels_coded --no-run
for pair in cortex-a72:neon cortex-a76:dotprod max:i8mm; do
    cpu=${pair%%:*} want=${pair##*:}
    echo "== QEMU_CPU=$cpu (expect $want)"
    start=$(date +%s.%N)
    QEMU_CPU=$cpu LLQ_EXPECT_KERNEL=$want cargo test -q --target "$target" --test kernels \
        --test kernels_coded -- --nocapture 2>&1 | grep -E "available kernel levels|selected kernel level|test result|panicked|FAILED" 
    test "${PIPESTATUS[0]}" -eq 0
    echo "   $(python3 -c "print(round($(date +%s.%N) - $start, 2))") s"
done
# The fixture tests that need no host binary (logits vs transformers, tokenizers, file
# formats) under each CPU model: they hold the whole forward pass on ARM to the references.
for cpu in cortex-a72 cortex-a76 max; do
    echo "== fixture tests, QEMU_CPU=$cpu"
    QEMU_CPU=$cpu cargo test -q --target "$target" \
        --test hf_fixtures --test tokenizer_fixtures --test format --test gguf_hostile --test gguf_dequant
done
if [ "${ALL:-0}" = 1 ]; then
    echo "== whole suite, QEMU_CPU=max"
    QEMU_CPU=max cargo test -q --target "$target"
fi
