#!/usr/bin/env python3
"""llama.cpp's next-token distributions on the real Gemma 3 270M Q4_K_M GGUF, for
tests/gemma3.rs.

llama.cpp (llama-cpp-python, built from source by pip; run it with the virtualenv
tools/bench_vs_llamacpp.py sets up, ~/.cache/llq/venv-llamacpp) tokenizes the
start of the fixtures' english.txt with its own tokenizer (BOS added), evaluates
the first N_TOKENS tokens in one batch with every position's logits, and records
per position the TOP_K most likely next tokens with their log-probabilities
(log-softmax over the whole vocabulary, in float64). N_TOKENS is past the model's
512-position sliding window, so its sliding-window layers are checked too.

Written: the llama.cpp version and system info, the token ids, and per position
`top` = [[id, logprob], ...] (most likely first).

The model itself is never committed (Gemma Terms of Use): fetch it with
tools/fetch_gemma3.sh.

Usage: ~/.cache/llq/venv-llamacpp/bin/python tools/gen_gemma3_llamacpp_refs.py
"""

import json
import os
import sys
from pathlib import Path

import llama_cpp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GGUF = (
    Path(os.environ.get("LLQ_CACHE", Path.home() / ".cache/llq"))
    / "gemma3/gemma-3-270m-q4_k_m.gguf"
)
TEXT = ROOT.parent / "shared/fixtures/smollm2/english.txt"
OUT = ROOT / "tests/data/gemma3_llamacpp_top.json"
N_TOKENS = 640
TOP_K = 8


def main():
    text = TEXT.read_text()
    llm = llama_cpp.Llama(
        model_path=str(GGUF),
        n_ctx=1024,
        n_batch=1024,
        n_ubatch=1024,
        n_threads=2,
        logits_all=True,
        verbose=False,
    )
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)[:N_TOKENS]
    assert len(ids) == N_TOKENS, len(ids)
    llm.eval(ids)
    logits = np.array(llm.scores[:N_TOKENS], dtype=np.float64)
    top = []
    for row in logits:
        m = row.max()
        lse = m + np.log(np.exp(row - m).sum())
        order = np.argsort(-row, kind="stable")[:TOP_K]
        top.append([[int(i), round(float(row[i] - lse), 6)] for i in order])
    out = {
        "model": GGUF.name,
        "text": "../shared/fixtures/smollm2/english.txt",
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "tokens": ids,
        "top": top,
    }
    OUT.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
