#!/usr/bin/env bash
# Install what llq's tests need on a fresh Debian machine (idempotent; run as root or with
# sudo): the AArch64 cross toolchain and qemu for the ARM kernel tests, the Rust target,
# and the real models the tests read: SmolLM2 and Gemma 3 270M (downloaded once into
# ~/.cache/llq).
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_apt=()
command -v aarch64-linux-gnu-gcc >/dev/null || need_apt+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || need_apt+=(libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need_apt+=(qemu-user)
command -v valgrind >/dev/null || need_apt+=(valgrind)
command -v cc >/dev/null || need_apt+=(gcc)
# tools/tsan-c-stress.sh's suppressions match function names: TSan needs a symbolizer.
command -v llvm-symbolizer >/dev/null || need_apt+=(llvm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}" >&2
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -q aarch64-unknown-linux-gnu; then
  echo "setup: rustup target add aarch64-unknown-linux-gnu" >&2
  rustup target add aarch64-unknown-linux-gnu >&2
fi

tools/fetch_smollm2.sh >/dev/null
# Gemma 3 270M Q4_K_M (tests/gguf_gemma3.rs): under the Gemma Terms of Use, so it is
# downloaded here at setup and never committed.
tools/fetch_gemma3.sh >/dev/null
