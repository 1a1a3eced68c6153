#!/usr/bin/env python3
"""Conversion speed: `llq convert` against llama.cpp's `llama_model_quantize`, same input,
same type, CPU time (user + system) and wall time, with KL divergence beside.

Input: an F32 GGUF of SmolLM2-135M-Instruct (written by llama.cpp from the Q4_1 GGUF that
tools/fetch_smollm2.sh fetches, ftype ALL_F32: exactly the weights it holds) and, with
--tinyllama, the f16 GGUF of tools/make_bench_model.py's 1.1B TinyLlama-shaped model.
Each engine quantizes that file in its own child process; the two engines alternate
(A B A B ...) for --reps rounds and the medians are compared (the machine may be shared:
ratios, not absolute times, are the result).
  - llama.cpp: a Python child calls llama_model_quantize (nthread = the machine's cores);
    its CPU time is getrusage(RUSAGE_SELF) around the call (Python's start-up and
    `import llama_cpp` are not counted), wall time likewise.
  - llq: `llq convert SRC --type T -o OUT` (rayon, one thread per core); CPU time is the
    child's rusage from wait4, wall time around the process.
Type pairs: llq's --type and the llama.cpp ftype that stores the same matrices the same
way (q4_k/q5_k ↔ Q4_K_S/Q5_K_S: both keep the output at Q6_K; on SmolLM2 the rows of
576 are not whole 256-blocks, so both fall back to Q5_0/Q5_1/Q8_0 there, as llama.cpp
does).

With --kl, each output's KL divergence from the f32 model over english.txt (256-token
windows, `llq perplexity --kl-divergence`; llama.cpp's file scored by llama.cpp itself
against the same base, as tools/bench_vs_llamacpp.py's quality mode does).

Writes docs/bench/convert.json and docs/bench/convert.md and prints a markdown table (date,
CPU, kernel level, commit); --benchmarks also puts the section into BENCHMARKS.md.

Usage: /work/venv/bin/python tools/bench_convert.py [--types q8_0 q4_0 ...] [--reps 3]
       [--kl] [--tinyllama] [--llq target/release/llq] [--benchmarks]
       /work/venv/bin/python tools/bench_convert.py --from-json docs/bench/convert.json --benchmarks
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_vs_llamacpp as B  # noqa: E402

# llq --type -> llama.cpp llama_ftype (LLAMA_FTYPE_MOSTLY_*).
TYPES = {
    "q8_0": ("Q8_0", 7),
    "q4_0": ("Q4_0", 2),
    "q4_1": ("Q4_1", 3),
    "q5_0": ("Q5_0", 8),
    "q5_1": ("Q5_1", 9),
    "q4_k": ("Q4_K_S", 14),
    "q5_k": ("Q5_K_S", 16),
    "q6_k": ("Q6_K", 18),
    "q4_k_m": ("Q4_K_M", 15),
    "q5_k_m": ("Q5_K_M", 17),
}
WORK = B.ROOT / ".cache/bench-convert"

# The llama.cpp child: quantize, report its own CPU and wall time of the call as JSON.
LLAMA_CHILD = r"""
import ctypes, json, resource, sys, time
import llama_cpp as L
cb = L.llama_log_callback(lambda level, text, user_data: None)
L.llama_log_set(cb, ctypes.c_void_p(0))
src, dst, ftype, nthread = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = L.llama_model_quantize_default_params()
p.ftype = ftype
p.nthread = nthread
p.allow_requantize = True
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
rc = L.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
print(json.dumps(dict(rc=rc, cpu=cpu, wall=t1 - t0)))
"""


def run_llamacpp(src, dst, ftype, nthread):
    out = subprocess.run([sys.executable, "-c", LLAMA_CHILD, str(src), str(dst), str(ftype),
                          str(nthread)], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["rc"] != 0:
        raise SystemExit(f"llama_model_quantize({src} -> ftype {ftype}) failed: {r['rc']}")
    return r["cpu"], r["wall"]


def run_llq(llq, src, dst, qtype):
    t0 = time.perf_counter()
    p = subprocess.Popen([str(llq), "convert", str(src), "--type", qtype, "-o", str(dst)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise SystemExit(f"llq convert {src} --type {qtype} failed:\n{err}")
    return ru.ru_utime + ru.ru_stime, wall


def f32_smollm2():
    import llama_cpp  # noqa: F401

    if not B.SMOL_GGUF.exists():
        subprocess.run(["bash", str(B.ROOT / "tools/fetch_smollm2.sh")], check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    dst = WORK / "smollm2-135m.f32.gguf"
    if not dst.exists():
        tmp = dst.with_suffix(".tmp")
        run_llamacpp(B.SMOL_GGUF, tmp, 0, os.cpu_count())  # LLAMA_FTYPE_ALL_F32
        tmp.rename(dst)
    return dst


def tinyllama(args):
    src = Path(args.tinyllama_dir) / "model.f16.gguf"
    if not src.exists():
        subprocess.run([sys.executable, str(B.ROOT / "tools/make_bench_model.py"),
                        "--out", str(args.tinyllama_dir)], check=True)
    return src


def med(v):
    return statistics.median(v)


def kl_rows(llq, f32_gguf, name, outs):
    """KL from the f32 model for each (qtype, llq file, llama.cpp file)."""
    fx = B.FIXTURES / "smollm2"
    pj = json.loads((fx / "perplexity.json").read_text())
    window, text = pj["window"], fx / pj["text_file"]
    f32 = WORK / f"{name}.f32.llq"
    if not f32.exists():
        B.sh([str(llq), "convert", str(f32_gguf), "--type", "f32", "-o", str(f32)])
    base = WORK / f"{name}.f32.kld"
    if not base.exists():
        B.llq_ppl(llq, f32, text, window, base, False)
    res = {}
    for qtype, lq, gg in outs:
        a = B.llq_ppl(llq, lq, text, window, base, True)
        b = B.kl_llamacpp(gg, base, pj["token_ids"], window, os.cpu_count())
        res[qtype] = dict(llq=a, llamacpp=b)
        print(f"  KL {qtype}: llq {a['mean_kl']:.5f}  llama.cpp {b['mean_kl']:.5f}", flush=True)
    return res


def table(out):
    lines = [
        f"Date {out['date']}, {out['cpu']} ({out['cores']} logical cores), llq kernel level "
        f"{out['kernel_level']}, commit {out['commit']}; the engines alternate, and each "
        "figure is the median over the row's reps. "
        "CPU = user + system time of the quantizing process; ratio = llq / llama.cpp.",
        "",
        "| model | llq type | llama.cpp ftype | reps | llq CPU s | llama.cpp CPU s | CPU ratio "
        "| llq wall s | llama.cpp wall s | wall ratio | llq KL | llama.cpp KL |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in out["rows"]:
        kl = r.get("kl")
        kls = (f"{kl['llq']['mean_kl']:.5f} | {kl['llamacpp']['mean_kl']:.5f}" if kl else "– | –")
        lines.append(
            f"| {r['model']} | {r['type']} | {r['llamacpp_ftype']} | {r.get('reps', out['reps'])} "
            f"| {r['llq_cpu']:.2f} | "
            f"{r['llamacpp_cpu']:.2f} | **{r['cpu_ratio']:.2f}×** | {r['llq_wall']:.2f} | "
            f"{r['llamacpp_wall']:.2f} | {r['wall_ratio']:.2f}× | {kls} |")
    return "\n".join(lines)


def section(out):
    """BENCHMARKS.md's "Conversion" section for a run (also docs/bench/convert.md, which
    tools/bench_vs_llamacpp.py's report keeps when it rewrites BENCHMARKS.md)."""
    return "\n".join([
        "## Conversion: `llq convert` vs llama.cpp's `llama_model_quantize`",
        "",
        "Written by `tools/bench_convert.py` (raw numbers in `docs/bench/convert.json`). Both "
        "engines quantize the same F32 GGUF of SmolLM2-135M-Instruct (llama.cpp's F32 "
        "dequantization of the Q4_1 GGUF) and, in the tinyllama rows, the f16 GGUF of "
        "`tools/make_bench_model.py`'s 1.1B TinyLlama-shaped model (deterministic random "
        "weights), each in a child process of their own, alternating; CPU = "
        "user + system time of that process (for llama.cpp, getrusage around the "
        "`llama_model_quantize` call, so Python's start-up is not counted), both with one "
        f"thread per core. The machine: {out['cpu']}, {out['cores']} logical cores, llq "
        f"kernel level {out['kernel_level']}, a VM shared with other jobs (load average "
        + " ".join(out["loadavg"]) + " at the end): read the ratios, not the seconds. Goal "
        "(issue 15): llq ≤ 3× llama.cpp's CPU time per type, KL unchanged or better.",
        "",
        table(out),
        "",
    ] + ([notes.read_text().rstrip(), ""] if (notes := B.RESULTS / "convert_notes.md").exists()
         else []))


def write_benchmarks(text):
    """Replace (or add, before the notes) the Conversion section of BENCHMARKS.md."""
    path = B.ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    head = "## Conversion"
    if head in doc:
        a = doc.index(head)
        b = doc.find("\n## ", a + 1)
        doc = doc[:a] + text + ("\n" + doc[b + 1:] if b >= 0 else "")
    else:
        b = doc.find("## Notes")
        doc = doc[:b] + text + "\n" + doc[b:] if b >= 0 else doc.rstrip() + "\n\n" + text
    path.write_text(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kl", action="store_true", help="KL from the f32 model (SmolLM2 only)")
    ap.add_argument("--tinyllama", action="store_true", help="also the 1.1B TinyLlama-shaped model")
    ap.add_argument("--tinyllama-reps", type=int,
                    help="reps for the 1.1B model (default: --reps; each takes ~10x SmolLM2's)")
    ap.add_argument("--tinyllama-dir", default=str(B.ROOT / ".cache/bench-models/tinyllama-shape"))
    ap.add_argument("--no-smollm2", action="store_true")
    ap.add_argument("--llq", help="llq binary (default: cargo build --release)")
    ap.add_argument("--out", default=str(B.RESULTS / "convert.json"))
    ap.add_argument("--benchmarks", action="store_true",
                    help="also write the Conversion section of BENCHMARKS.md")
    ap.add_argument("--from-json", help="only re-print (and with --benchmarks write) a saved run")
    args = ap.parse_args()
    if args.from_json:
        out = json.loads(Path(args.from_json).read_text())
        finish(out, args)
        return
    llq = B.llq_binary(args)
    nthread = os.cpu_count()
    srcs = []
    if not args.no_smollm2:
        srcs.append(("smollm2-135m", f32_smollm2()))
    if args.tinyllama:
        srcs.append(("tinyllama-1.1b-shape", tinyllama(args)))
    WORK.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, src in srcs:
        kl_outs = []
        for qtype in args.types:
            lname, ftype = TYPES[qtype]
            lq, gg = WORK / f"{name}.{qtype}.llq", WORK / f"{name}.{lname}.gguf"
            t = dict(llq_cpu=[], llq_wall=[], llamacpp_cpu=[], llamacpp_wall=[])
            reps = args.tinyllama_reps if name.startswith("tinyllama") and args.tinyllama_reps \
                else args.reps
            for rep in range(reps):
                # Alternate which engine goes first, so drift in the machine's load hits both.
                order = ["llq", "llamacpp"] if rep % 2 == 0 else ["llamacpp", "llq"]
                for e in order:
                    if e == "llq":
                        c, w = run_llq(llq, src, lq, qtype)
                    else:
                        c, w = run_llamacpp(src, gg, ftype, nthread)
                    t[f"{e}_cpu"].append(c)
                    t[f"{e}_wall"].append(w)
            row = dict(model=name, type=qtype, llamacpp_ftype=lname, reps=reps,
                       **{k: med(v) for k, v in t.items()}, samples=t,
                       llq_bytes=lq.stat().st_size, llamacpp_bytes=gg.stat().st_size)
            row["cpu_ratio"] = row["llq_cpu"] / row["llamacpp_cpu"]
            row["wall_ratio"] = row["llq_wall"] / row["llamacpp_wall"]
            rows.append(row)
            print(f"{name} {qtype:7} llq {row['llq_cpu']:7.2f} s CPU {row['llq_wall']:6.2f} s wall | "
                  f"llama.cpp {lname:7} {row['llamacpp_cpu']:6.2f} s CPU {row['llamacpp_wall']:6.2f} s "
                  f"wall | CPU ratio {row['cpu_ratio']:.2f}  wall ratio {row['wall_ratio']:.2f}",
                  flush=True)
            kl_outs.append((qtype, lq, gg, row))
        if args.kl and name == "smollm2-135m":
            kl = kl_rows(llq, src, name, [(q, lq, gg) for q, lq, gg, _ in kl_outs])
            for q, _, _, row in kl_outs:
                row["kl"] = kl[q]
    kernel = subprocess.run([str(llq), "info", "--kernels"], capture_output=True,
                            text=True).stdout.split()[-1]
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               cpu=B.cpu_model(), cores=os.cpu_count(), kernel_level=kernel,
               commit=B.git_commit(), reps=args.reps, loadavg=B.loadavg(), rows=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    finish(out, args)


def finish(out, args):
    text = section(out)
    (B.RESULTS / "convert.md").write_text(text)
    if args.benchmarks:
        write_benchmarks(text)
    print()
    print(table(out))


if __name__ == "__main__":
    main()
