#!/usr/bin/env python3
"""Reference hashes of every tensor of the real Gemma 3 270M Q4_K_M GGUF, for
tests/gguf_gemma3.rs.

Uses the PyPI `gguf` package (`pip install gguf numpy`) as the reference: each
tensor is dequantized with `gguf.quants.dequantize` and its values, as
little-endian f32 in row-major order (ne0, the row length, varies fastest),
are hashed with sha256. Written per tensor, in file order:

    name          tensor name
    type          ggml type name (F32, Q4_K, ...)
    dims          dimensions as stored in the GGUF, ne0 first
    n_elements    product of dims
    raw_sha256    sha256 of the tensor's bytes as stored in the file
    f32_sha256    sha256 of the dequantized values (little-endian f32)

The model itself is never committed (Gemma Terms of Use): fetch it with
tools/fetch_gemma3.sh. The output is deterministic (no randomness, sorted
keys, fixed order), so re-running reproduces the committed file.

Usage: python3 tools/gen_gemma3_dequant_refs.py [model.gguf] [out.json]
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_GGUF = (
    Path(os.environ.get("LLQ_CACHE", Path.home() / ".cache/llq"))
    / "gemma3/gemma-3-270m-q4_k_m.gguf"
)
DEFAULT_OUT = ROOT / "tests/data/gemma3_dequant_sha256.json"
# sha256 of the file tools/fetch_gemma3.sh assembles: the hashes are of this file.
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main():
    gguf_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_GGUF
    out_path = Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_OUT
    sha = file_sha256(gguf_path)
    if sha != GGUF_SHA256:
        sys.exit(f"{gguf_path}: sha256 {sha}, expected {GGUF_SHA256} (run tools/fetch_gemma3.sh)")
    reader = GGUFReader(gguf_path)
    tensors = []
    for t in reader.tensors:
        dims = [int(d) for d in t.shape]  # gguf-py keeps the file's order: ne0 first
        n = int(np.prod(dims))
        values = dequantize(t.data, t.tensor_type)
        values = np.ascontiguousarray(values, dtype="<f4").reshape(-1)
        assert values.size == n == int(t.n_elements), t.name
        raw = np.ascontiguousarray(t.data).view(np.uint8).reshape(-1)
        assert raw.size == int(t.n_bytes), t.name
        tensors.append({
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": dims,
            "n_elements": n,
            "raw_sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
            "f32_sha256": hashlib.sha256(values.tobytes()).hexdigest(),
        })
        print(f"{t.name:32} {t.tensor_type.name:5} {dims}", file=sys.stderr)
    doc = {
        "about": "gguf-py dequantization of every tensor of gemma-3-270m-q4_k_m.gguf "
                 "(tools/gen_gemma3_dequant_refs.py; model fetched by tools/fetch_gemma3.sh)",
        "gguf_sha256": GGUF_SHA256,
        "tensors": tensors,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # One tensor a line, keys sorted: small, stable diffs.
    lines = [json.dumps(t, sort_keys=True) for t in tensors]
    head = json.dumps({k: v for k, v in doc.items() if k != "tensors"}, indent=1, sort_keys=True)
    out_path.write_text(head[:-2] + ',\n "tensors": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n")
    assert json.loads(out_path.read_text()) == doc
    counts = {}
    for t in tensors:
        counts[t["type"]] = counts.get(t["type"], 0) + 1
    print(f"{out_path}: {len(tensors)} tensors {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
