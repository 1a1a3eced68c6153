#!/usr/bin/env python3
"""Generate reference dequantization test vectors for llq's GGUF support.

Uses the PyPI `gguf` package (`pip install gguf numpy`) as the reference:
for every supported ggml type, a few random blocks are built (random bytes,
with every f16 scale/min field overwritten by a finite, moderate value so the
expected output contains no NaN/inf), dequantized with `gguf.quants.dequantize`
and written to `tests/data/ggml_dequant/<TYPE>.bin`.

File layout (all little-endian):
    magic      b"LLQDQV01"   (8 bytes)
    type_id    u32           ggml type id
    n_blocks   u32
    block_size u32           elements per block
    type_size  u32           bytes per block
    raw        n_blocks * type_size bytes
    expected   n_blocks * block_size f32 values

Usage: python3 tools/gen_ggml_dequant_vectors.py [out_dir]
The seed is fixed, so re-running reproduces the committed files.
"""

import struct
import sys
from pathlib import Path

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize

QK_K = 256

# Byte offsets of the f16 scale-like fields inside one block (ggml-common.h).
F16_FIELDS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    # block_q2_K: scales[16], qs[64], d, dmin
    T.Q2_K: [QK_K // 16 + QK_K // 4, QK_K // 16 + QK_K // 4 + 2],
    # block_q3_K: hmask[32], qs[64], scales[12], d
    T.Q3_K: [QK_K // 8 + QK_K // 4 + 12],
    # block_q4_K: d, dmin, scales[12], qs[128]
    T.Q4_K: [0, 2],
    # block_q5_K: d, dmin, scales[12], qh[32], qs[128]
    T.Q5_K: [0, 2],
    # block_q6_K: ql[128], qh[64], scales[16], d
    T.Q6_K: [QK_K // 2 + QK_K // 4 + QK_K // 16],
}

QUANT_BLOCKS = 8
PLAIN_ELEMS = 64  # "blocks" for F32/F16/BF16 are single elements


def sane_f16(rng, n):
    mag = rng.uniform(1e-3, 2.0, size=n)
    sign = rng.choice([-1.0, 1.0], size=n)
    return (mag * sign).astype(np.float16)


def make_raw(rng, ty):
    block_size, type_size = GGML_QUANT_SIZES[ty]
    if ty == T.F32:
        return rng.standard_normal(PLAIN_ELEMS).astype(np.float32).view(np.uint8), PLAIN_ELEMS
    if ty == T.F16:
        return (rng.standard_normal(PLAIN_ELEMS) * 10).astype(np.float16).view(np.uint8), PLAIN_ELEMS
    if ty == T.BF16:
        f = (rng.standard_normal(PLAIN_ELEMS) * 10).astype(np.float32)
        return (f.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8), PLAIN_ELEMS
    raw = rng.integers(0, 256, size=(QUANT_BLOCKS, type_size), dtype=np.uint8)
    for off in F16_FIELDS[ty]:
        raw[:, off:off + 2] = sane_f16(rng, QUANT_BLOCKS).view(np.uint8).reshape(QUANT_BLOCKS, 2)
    return raw.reshape(-1), QUANT_BLOCKS


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/data/ggml_dequant"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0x11A_6607)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
    for ty in types:
        block_size, type_size = GGML_QUANT_SIZES[ty]
        raw, n_blocks = make_raw(rng, ty)
        assert raw.size == n_blocks * type_size
        expected = dequantize(raw.copy(), ty).astype(np.float32).reshape(-1)
        assert expected.size == n_blocks * block_size
        assert np.all(np.isfinite(expected)), ty.name
        path = out_dir / f"{ty.name}.bin"
        with open(path, "wb") as f:
            f.write(b"LLQDQV01")
            f.write(struct.pack("<4I", int(ty), n_blocks, block_size, type_size))
            f.write(raw.tobytes())
            f.write(expected.astype("<f4").tobytes())
        print(f"{path}: {n_blocks} blocks, {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
