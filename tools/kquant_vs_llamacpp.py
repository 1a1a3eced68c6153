#!/usr/bin/env python3
"""llq runs llama.cpp's own K-quant files: logits against llama.cpp's on the same GGUF.

For each type (default Q4_K_M, Q5_K_M, Q6_K, and the legacy Q4_1/Q5_0/Q5_1 that K-quant
files use for some rows):
  1. llama.cpp writes SmolLM2 as an F32 GGUF (llama_model_quantize, ftype ALL_F32, from
     the Q4_1 GGUF that tools/fetch_smollm2.sh fetches: exactly the weights it holds),
     then quantizes that F32 file to the type (llama_model_quantize, not a requantize);
  2. llama.cpp computes every position's logits over english.txt (256-token windows, the
     protocol of `llq perplexity`), written as an llq KL base file (log-probs, 16 bits);
  3. `llq convert` imports the GGUF (each tensor keeps its type, no second rounding) and
     `llq perplexity --kl-divergence-base <llama.cpp's> --kl-divergence` scores it.
The issue's bar: mean KL ≤ 1e-3 and top-1 agreement ≥ 99% for every type.

With --self, each type also gets llama.cpp against itself on the same file, scored the same
way against the same base: its log-probs one token per micro-batch (n_ubatch 1, the path a
chat decodes with) and, with --other-venv, those of another build of llama.cpp (e.g. the
AVX2-only one the bench script's stand-in uses), run in that virtualenv.

Results go to docs/bench/kquant_match.json and are printed; BENCHMARKS.md quotes them.
Runs inside the virtualenv of tools/bench_vs_llamacpp.py (llama-cpp-python, gguf, numpy).

Usage: tools/kquant_vs_llamacpp.py [--types Q4_K_M Q6_K ...] [--threads 2]
                                   [--self [--other-venv ~/.cache/llq/venv-llamacpp-avx2]]
"""

import argparse
import datetime
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_llamacpp as B  # noqa: E402

# llama.cpp's llama_ftype values.
FTYPES = {"F32": 0, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q4_K_M": 15,
          "Q5_K_M": 17, "Q6_K": 18}
DEFAULT_TYPES = ["Q4_K_M", "Q5_K_M", "Q6_K", "Q4_1", "Q5_0", "Q5_1"]


def llamacpp_base(gguf_path, token_ids, window, threads, out, n_ubatch=None):
    """llama.cpp's log-probs at every scored position, in llq's KL base format (each
    window in one batch, split into micro-batches of `n_ubatch` tokens if given)."""
    import numpy as np

    if out.exists():
        return out
    lc = B.LlamaCpp(gguf_path, n_ctx=window)
    lc.context(threads, n_batch=window, kv_f32=True, n_ubatch=n_ubatch)
    vocab = lc.n_vocab
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(b"LLQKLD\x01\x00")
        f.write(struct.pack("<IIQ", vocab, window, len(token_ids)))
        f.write(np.asarray(token_ids, dtype="<u4").tobytes())
        for w in range(len(token_ids) // window):
            toks = [int(t) for t in token_ids[w * window:(w + 1) * window]]
            lg = lc.all_logits(toks)[:window - 1].astype(np.float64)
            mx = lg.max(axis=1, keepdims=True)
            lp = (lg - (mx + np.log(np.exp(lg - mx).sum(axis=1, keepdims=True)))).astype(np.float32)
            # The same 16-bit encoding as llq's save_base_logits (in f32 arithmetic).
            mn, mxv = lp.min(axis=1), lp.max(axis=1)
            step = np.maximum((mxv - mn) / np.float32(65535.0), np.finfo(np.float32).tiny)
            q = np.clip(np.round((lp - mn[:, None]) / step[:, None]), 0, 65535).astype("<u2")
            for r in range(lp.shape[0]):
                f.write(struct.pack("<ff", mn[r], step[r]))
                f.write(q[r].tobytes())
    lc.close()
    tmp.rename(out)
    return out


def read_base(path):
    """Log-probs of a KL base file, one scored position at a time."""
    import numpy as np

    with open(path, "rb") as f:
        if f.read(8) != b"LLQKLD\x01\x00":
            raise SystemExit(f"{path}: not an llq KL base file")
        vocab, window, n = struct.unpack("<IIQ", f.read(16))
        f.seek(4 * n, 1)
        for _ in range((n // window) * (window - 1)):
            mn, step = struct.unpack("<ff", f.read(8))
            q = np.frombuffer(f.read(2 * vocab), dtype="<u2")
            yield mn + q.astype(np.float64) * step


def base_vs_base(base, other):
    """Mean KL(base ‖ other) and top-1 agreement between two KL base files, each
    distribution renormalized after the 16-bit decoding, as `llq perplexity` does."""
    import numpy as np

    kls, agree = [], 0
    for a, b in zip(read_base(base), read_base(other)):
        a = a - (a.max() + np.log(np.exp(a - a.max()).sum()))
        b = b - (b.max() + np.log(np.exp(b - b.max()).sum()))
        kls.append(float((np.exp(a) * (a - b)).sum()))
        agree += int(a.argmax() == b.argmax())
    kls = np.array(kls)
    return dict(mean_kl=round(float(kls.mean()), 6), median_kl=round(float(np.median(kls)), 6),
                p99_kl=round(float(np.percentile(kls, 99)), 6), top1=agree / len(kls))


def other_build_base(venv, gguf_path, threads, out):
    """llama.cpp's log-probs as another build (the llama-cpp-python in `venv`) computes
    them: this script's --base-only, run by that virtualenv's python."""
    if not out.exists():
        env = dict(os.environ, LLQ_BENCH_VENV=str(venv))
        subprocess.run([str(Path(venv) / "bin/python"), __file__, "--base-only", str(gguf_path),
                        str(out), "--threads", str(threads)], check=True, env=env)
    return out


def system_info(venv=None):
    """The CPU features a llama.cpp build was compiled with (`llama_print_system_info`):
    this process's build, or the one in `venv` (asked through that virtualenv's python)."""
    if venv is None:
        import llama_cpp

        return llama_cpp.llama_print_system_info().decode().strip()
    code = "import llama_cpp as L; print(L.llama_print_system_info().decode())"
    return subprocess.run([str(Path(venv) / "bin/python"), "-c", code], capture_output=True,
                          text=True, check=True).stdout.strip()


def main():
    B.ensure_venv()
    if len(sys.argv) > 1 and sys.argv[1] == "--base-only":
        ap = argparse.ArgumentParser()
        ap.add_argument("--base-only", nargs=2, metavar=("GGUF", "OUT"))
        ap.add_argument("--threads", type=int, default=2)
        a = ap.parse_args()
        pj = json.loads((B.FIXTURES / "smollm2/perplexity.json").read_text())
        llamacpp_base(Path(a.base_only[0]), pj["token_ids"], pj["window"], a.threads,
                      Path(a.base_only[1]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", nargs="+", default=DEFAULT_TYPES)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llq", help="llq binary (default: cargo build --release)")
    ap.add_argument("--self", action="store_true",
                    help="also score llama.cpp against itself (n_ubatch 1; --other-venv)")
    ap.add_argument("--other-venv", type=Path,
                    help="a virtualenv with another build of llama-cpp-python, for --self")
    args = ap.parse_args()
    llq = B.llq_binary(args)
    fx = B.FIXTURES / "smollm2"
    pj = json.loads((fx / "perplexity.json").read_text())
    window, ids = pj["window"], pj["token_ids"]
    text = fx / pj["text_file"]
    if not B.SMOL_GGUF.exists():
        subprocess.run(["bash", str(B.ROOT / "tools/fetch_smollm2.sh")], check=True)
    B.WORK.mkdir(parents=True, exist_ok=True)
    f32 = B.llamacpp_f32(B.SMOL_GGUF, B.WORK / "smollm2-135m.llamacpp.f32.gguf")
    rows = []
    for t in args.types:
        gg = B.llamacpp_quantize(f32, B.WORK / f"smollm2-135m.{t}.from-f32.gguf", FTYPES[t])
        base = llamacpp_base(gg, ids, window, args.threads, B.WORK / f"smollm2-135m.{t}.llamacpp.kld")
        lq = B.WORK / f"smollm2-135m.{t}.kept.llq"
        B.sh([str(llq), "convert", str(gg), "-o", str(lq)])
        r = B.llq_ppl(llq, lq, text, window, base, True)
        import gguf

        types = {}
        for tensor in gguf.GGUFReader(str(gg)).tensors:
            if len(tensor.shape) == 2:
                n = tensor.tensor_type.name
                types[n] = types.get(n, 0) + 1
        row = dict(type=t, gguf_bytes=gg.stat().st_size, llq_bytes=lq.stat().st_size,
                   tensor_types=types, **r)
        if args.self:
            ub1 = llamacpp_base(gg, ids, window, args.threads,
                                B.WORK / f"smollm2-135m.{t}.llamacpp-ubatch1.kld", n_ubatch=1)
            row["llamacpp_ubatch1"] = base_vs_base(base, ub1)
            if args.other_venv:
                other = other_build_base(
                    args.other_venv, gg, args.threads,
                    B.WORK / f"smollm2-135m.{t}.llamacpp-{args.other_venv.name}.kld")
                row["llamacpp_other_build"] = base_vs_base(base, other)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = dict(date=datetime.date.today().isoformat(), cpu=B.cpu_model(), commit=B.git_commit(),
               kernel_level=subprocess.run([str(llq), "info", "--kernels"], capture_output=True,
                                           text=True).stdout.split()[-1],
               window=window, n_tokens=len(ids), rows=rows, llamacpp=system_info(),
               note="KL(llama.cpp || llq) per position: llama.cpp's log-probs on the same "
                    "GGUF are the base; llq imports the file keeping every tensor's type")
    if args.self:
        out["self_note"] = ("llamacpp_ubatch1: the same build with n_ubatch 1 against the "
                            "same base; llamacpp_other_build: the build in other_venv")
        if args.other_venv:
            out["other_venv"] = str(args.other_venv).replace(str(Path.home()), "~", 1)
            out["other_llamacpp"] = system_info(args.other_venv)
    B.RESULTS.mkdir(parents=True, exist_ok=True)
    (B.RESULTS / "kquant_match.json").write_text(json.dumps(out, indent=1) + "\n")
    bad = [r["type"] for r in rows if r["mean_kl"] > 1e-3 or r["top1"] < 0.99]
    print("all within mean KL <= 1e-3, top-1 >= 99%" if not bad else f"outside the bar: {bad}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
