#!/usr/bin/env python3
"""SmolLM2 perplexity and KL divergence, llq vs llama.cpp: the `quality` mode of
tools/bench_vs_llamacpp.py (same flags), then BENCHMARKS.md is rewritten."""

import os
import sys
from pathlib import Path

script = Path(__file__).resolve().parent / "bench_vs_llamacpp.py"
os.execv(sys.executable, [sys.executable, str(script), "quality"] + sys.argv[1:])
