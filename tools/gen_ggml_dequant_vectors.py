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

Every quantized type also gets `<TYPE>_edge.bin` (same layout), built without
randomness from blocks at the extremes that random bytes hit rarely or never:
every quant byte 0x00 or 0xFF, 6-bit K-quant scales and mins at 0 and 63 (and
mixed), Q6_K's signed scales at -128 and 127, Q8_0's quants at -128 and 127,
Q3_K's scales at both ends (-32 and 31), and f16 scale fields that are
negative, the largest finite f16 (65504) or subnormal (2^-24). The random
vectors are generated first and draw from the generator exactly as before, so
adding the edge files left them unchanged.
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


# f16 scale-like values for the edge blocks: ordinary, negative, the largest
# finite f16, the smallest subnormal, zero.
EDGE_F16 = [1.5, -0.75, 65504.0, -65504.0, 2.0 ** -24, 0.0]


def set_f16(block, ty, values):
    for off, v in zip(F16_FIELDS[ty], values):
        block[off:off + 2] = np.array([v], dtype="<f2").view(np.uint8)


def pack_k4_scales(sc, mn):
    """The 12 bytes ggml's get_scale_min_k4 reads 8 6-bit scales and mins from."""
    q = [0] * 12
    for j in range(4):
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
        q[j + 4] = (mn[j] & 63) | ((mn[j + 4] >> 4) << 6)
        q[j + 8] = (sc[j + 4] & 0x0F) | ((mn[j + 4] & 0x0F) << 4)
    return np.array(q, dtype=np.uint8)


def pack_q3_k_scales(sc):
    """The 12 bytes block_q3_K stores 16 6-bit scales (value + 32) in."""
    u = [(s + 32) & 63 for s in sc]
    q = [0] * 12
    for i in range(16):
        low = u[i] & 0x0F
        if i < 8:
            q[i] |= low
        else:
            q[i - 8] |= low << 4
        q[8 + i % 4] |= (u[i] >> 4) << (2 * (i // 4))
    return np.array(q, dtype=np.uint8)


def edge_blocks(ty):
    """Deterministic blocks at the extremes of `ty`'s fields (see the module doc)."""
    _, type_size = GGML_QUANT_SIZES[ty]
    n_f16 = len(F16_FIELDS[ty])
    blocks = []

    def block(fill, f16s):
        b = np.full(type_size, fill, dtype=np.uint8)
        set_f16(b, ty, f16s)
        blocks.append(b)
        return b

    # All quant bits set, all clear, alternating; under every kind of f16 scale.
    for fill in (0x00, 0xFF, 0x55, 0xAA):
        for v in EDGE_F16:
            block(fill, [v, -v / 2][:n_f16])
    # A byte ramp under the largest scales: every byte value in some field.
    b = block(0, [65504.0, -65504.0][:n_f16])
    ramp = (np.arange(type_size) * 37 + 11).astype(np.uint8)
    keep = np.ones(type_size, dtype=bool)
    for off in F16_FIELDS[ty]:
        keep[off:off + 2] = False
    b[keep] = ramp[keep]

    if ty in (T.Q4_K, T.Q5_K):
        # 6-bit scales and mins at 0 and 63, each alone and mixed.
        lo, hi = [0] * 8, [63] * 8
        alt = [0, 63] * 4
        for sc, mn in ((hi, lo), (lo, hi), (hi, hi), (alt, alt[::-1]), (alt[::-1], alt),
                       ([1, 2, 4, 8, 16, 32, 62, 63], [63, 62, 32, 16, 8, 4, 2, 1])):
            for qfill in (0x00, 0xFF):
                b = block(qfill, [1.25, -0.5])
                b[4:16] = pack_k4_scales(sc, mn)
    if ty == T.Q6_K:
        # Signed 8-bit scales at -128, -1, 0, 1 and 127.
        for sc in ([-128] * 16, [127] * 16, [-128, 127] * 8, [-128, -1, 0, 1, 127, 0, -128, 127] * 2):
            for qfill in (0x00, 0xFF, 0x5A):
                b = block(qfill, [-1.75])
                b[192:208] = np.array(sc, dtype=np.int8).view(np.uint8)
    if ty == T.Q3_K:
        for sc in ([-32] * 16, [31] * 16, [-32, 31] * 8, list(range(-32, 32, 4))):
            for qfill in (0x00, 0xFF):
                b = block(qfill, [0.625])
                b[96:108] = pack_q3_k_scales(sc)
    if ty == T.Q8_0:
        for q in ([-128] * 32, [127] * 32, [-128, 127] * 16, list(range(-128, 128, 8))):
            b = block(0, [-1.5])
            b[2:34] = np.array(q, dtype=np.int8).view(np.uint8)
    return np.stack(blocks)


def write_vectors(path, ty, raw, n_blocks):
    block_size, type_size = GGML_QUANT_SIZES[ty]
    assert raw.size == n_blocks * type_size
    expected = dequantize(raw.copy(), ty).astype(np.float32).reshape(-1)
    assert expected.size == n_blocks * block_size
    assert np.all(np.isfinite(expected)), ty.name
    with open(path, "wb") as f:
        f.write(b"LLQDQV01")
        f.write(struct.pack("<4I", int(ty), n_blocks, block_size, type_size))
        f.write(raw.tobytes())
        f.write(expected.astype("<f4").tobytes())
    print(f"{path}: {n_blocks} blocks, {path.stat().st_size} bytes")


def main():
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/data/ggml_dequant"
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0x11A_6607)
    types = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
    for ty in types:
        raw, n_blocks = make_raw(rng, ty)
        write_vectors(out_dir / f"{ty.name}.bin", ty, raw, n_blocks)
    for ty in types:
        if ty in F16_FIELDS:
            raw = edge_blocks(ty)
            write_vectors(out_dir / f"{ty.name}_edge.bin", ty, raw.reshape(-1), raw.shape[0])


if __name__ == "__main__":
    main()
