#!/usr/bin/env python3 -u
"""Compare single-threaded tokenizer throughput: llq vs Hugging Face `tokenizers`
(SmolLM2 byte-level BPE) and Google `sentencepiece` (Llama 2 SPM).

    pip install tokenizers sentencepiece
    python3 tools/bench_tokenizers.py

Builds the same ~1 MB mixed-language text as `examples/tokenize_bench.rs`
(fixture strings joined by newlines, repeated), times the Python libraries
(best of 5), then runs the llq example on the identical text.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "..", "shared", "fixtures", "tokenizers")


def build_text():
    with open(os.path.join(FIX, "smollm2-bpe", "cases.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    block = "\n".join(texts)
    out = []
    size = 0
    while size < 1_000_000:
        out.append(block + "\n")
        size += len((block + "\n").encode("utf-8"))
    return "".join(out)


def best_of(fn, n=5):
    best = float("inf")
    res = None
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn()
        best = min(best, time.perf_counter() - t0)
    return best, res


def main():
    from tokenizers import Tokenizer
    import sentencepiece as spm

    text = build_text()
    nbytes = len(text.encode("utf-8"))
    sys.stdout.reconfigure(line_buffering=True)
    print(f"text: {nbytes} bytes; date: {time.strftime('%Y-%m-%d %H:%M:%S')}")

    hf = Tokenizer.from_file(os.path.join(FIX, "smollm2-bpe", "tokenizer.json"))
    t, ids = best_of(lambda: hf.encode(text, add_special_tokens=False).ids)
    print(f"HF tokenizers smollm2-bpe: {nbytes / t / 1e6:.2f} MB/s ({len(ids)} tokens, {t * 1e3:.1f} ms)")
    lines = text.split("\n")
    t, n = best_of(lambda: sum(len(hf.encode(l, add_special_tokens=False).ids) for l in lines), 3)
    print(f"HF tokenizers smollm2-bpe per line: {nbytes / t / 1e6:.2f} MB/s ({n} tokens, {t * 1e3:.1f} ms)")

    sp = spm.SentencePieceProcessor(model_file=os.path.join(FIX, "llama2-spm", "tokenizer.model"))
    t, ids = best_of(lambda: sp.encode(text))
    print(f"sentencepiece llama2-spm: {nbytes / t / 1e6:.2f} MB/s ({len(ids)} tokens, {t * 1e3:.1f} ms)")
    t, n = best_of(lambda: sum(len(sp.encode(l)) for l in lines), 3)
    print(f"sentencepiece llama2-spm per line: {nbytes / t / 1e6:.2f} MB/s ({n} tokens, {t * 1e3:.1f} ms)")

    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
        f.write(text)
        path = f.name
    try:
        env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")))
        subprocess.run(
            ["cargo", "run", "--quiet", "--release", "--example", "tokenize_bench", "--", path],
            cwd=ROOT, env=env, check=True, stdout=sys.stdout,
        )
    finally:
        os.unlink(path)


if __name__ == "__main__":
    main()
