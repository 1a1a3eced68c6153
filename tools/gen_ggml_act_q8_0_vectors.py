#!/usr/bin/env python3
"""Reference vectors for llq's activation quantizer, made by ggml's own CPU code.

llama.cpp quantizes the activations of a Q8_0/Q4_0/Q5_0 matrix product (and a q8_0 KV
cache) with ggml-cpu's `from_float` of GGML_TYPE_Q8_0 — on x86-64 its AVX path, which
differs from the reference `quantize_row_q8_0_ref` llama-quantize uses for weights
(id = 127/max|x| instead of 1/d, and rounding half to even instead of away from zero).
This script calls that very function, from the libggml-cpu that llama-cpp-python builds
(tools/bench_vs_llamacpp.py's virtualenv), through `ggml_get_type_traits_cpu`, on rows
chosen to hit those differences, and writes tests/data/ggml_act_q8_0.bin:

    magic   b"LLQAQ801"
    n_rows  u32, cols u32      (cols a multiple of 32)
    input   n_rows * cols f32
    output  n_rows * cols/32 blocks of 34 bytes (f16 d, 32 x i8)

tests/kernels.rs checks `quant::quantize_act_q8_0` and every kernel level against it.
Run on an x86-64 machine with AVX2 (the path llq mirrors). The seed is fixed.

Usage: <venv>/bin/python tools/gen_ggml_act_q8_0_vectors.py [out_file]
"""

import ctypes
import struct
import sys
from pathlib import Path

import numpy as np


def ggml_from_float_q8_0():
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    cpu = ctypes.CDLL(str(lib_dir / "libggml-cpu.so"))

    class Traits(ctypes.Structure):  # struct ggml_type_traits_cpu (ggml-cpu.h)
        _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p),
                    ("vec_dot_type", ctypes.c_int), ("nrows", ctypes.c_int64)]

    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(Traits)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    # ggml-cpu only fills its tables (and detects the CPU) once initialised.
    if hasattr(cpu, "ggml_cpu_init"):
        cpu.ggml_cpu_init()
    GGML_TYPE_Q8_0 = 8
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        cpu.ggml_get_type_traits_cpu(GGML_TYPE_Q8_0).contents.from_float)

    def quantize(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(len(x) // 32 * 34, dtype=np.uint8)
        fn(x.ctypes.data, out.ctypes.data, len(x))
        return out

    return quantize


def rows(rng, cols):
    out = []
    # Activations of the size a model has: Gaussian, and a few massive outliers per row
    # (SmolLM2's residual stream has them; they set a block's scale).
    for _ in range(6):
        x = rng.standard_normal(cols).astype(np.float32)
        x[rng.integers(0, cols, 3)] *= 300
        out.append(x)
    # Values exactly halfway between codes at scale 1 (max|x| = 127): ties.
    x = (rng.integers(-127, 127, cols) + 0.5).astype(np.float32)
    x[::32] = 127.0
    out.append(x)
    # Values that land within an ulp of k + 1/2 after scaling by 127/max, where 1/d and
    # 127/max round differently; found by search over random scales.
    for _ in range(4):
        m = np.float32(rng.uniform(0.1, 50))
        k = rng.integers(-126, 126, cols).astype(np.float32) + np.float32(0.5)
        x = (k * (m / np.float32(127))).astype(np.float32)
        x[::32] = m
        out.append(x)
    # Zeros, tiny and huge values.
    out.append(np.zeros(cols, np.float32))
    out.append((rng.standard_normal(cols) * 1e-30).astype(np.float32))
    out.append((rng.standard_normal(cols) * 1e30).astype(np.float32))
    return out


def main():
    dst = Path(sys.argv[1]) if len(sys.argv) > 1 else \
        Path(__file__).resolve().parent.parent / "tests/data/ggml_act_q8_0.bin"
    quantize = ggml_from_float_q8_0()
    rng = np.random.default_rng(20261202)
    cols = 576
    rs = rows(rng, cols)
    with open(dst, "wb") as f:
        f.write(b"LLQAQ801")
        f.write(struct.pack("<II", len(rs), cols))
        for x in rs:
            f.write(x.astype("<f4").tobytes())
        for x in rs:
            f.write(quantize(x).tobytes())
    print(f"wrote {dst} ({len(rs)} rows of {cols})")


if __name__ == "__main__":
    main()
