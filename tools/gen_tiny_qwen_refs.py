#!/usr/bin/env python3
"""Tiny random Qwen2 and Qwen3 checkpoints with llama.cpp's logits, for tests/qwen.rs.

For each architecture, random f32 weights (fixed seed) are written twice: as a Hugging
Face checkpoint (config.json + model.safetensors, transformers' names; committed under
tests/data/tiny-<arch>/) and as a GGUF the way llama.cpp's convert_hf_to_gguf.py writes
these architectures (gguf-py's GGUFWriter: `<arch>.*` keys, llama.cpp's tensor names, Q and
K rows in Hugging Face's order, no vocabulary: `tokenizer.ggml.model = none` and `<arch>.vocab_size`; not
committed: tests/qwen.rs writes the same file again from the checkpoint). llama.cpp
(llama-cpp-python) evaluates PROMPT on the GGUF with every position's logits; they are
saved in tests/data/tiny-<arch>/llamacpp_logits.json with llama.cpp's version.

Qwen2 has biases on Q, K and V and tied embeddings; Qwen3 has per-head Q/K RMSNorms, a
head size (32) that is not hidden / heads (16), and an untied output matrix.

Usage: ~/.cache/llq/venv-llamacpp/bin/python tools/gen_tiny_qwen_refs.py
"""

import json
import sys
import tempfile
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
DIM, HEADS, KV_HEADS, FFN, LAYERS, VOCAB, CTX = 64, 4, 2, 96, 2, 128, 128
PROMPT = [1, 17, 99, 5, 64, 3, 127, 42, 42, 8, 0, 77, 12, 90, 31, 64, 2, 55, 101, 6, 19, 88, 44, 120]
EPS, THETA = 1e-6, 1000000.0


def weights(arch, rng):
    hd = 32 if arch == "qwen3" else DIM // HEADS
    q, kv = HEADS * hd, KV_HEADS * hd
    r = lambda *s: (rng.standard_normal(s) * 0.15).astype(np.float32)
    norm = lambda n: (1.0 + rng.standard_normal(n) * 0.1).astype(np.float32)
    hf = {"model.embed_tokens.weight": r(VOCAB, DIM)}
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        hf |= {p + "input_layernorm.weight": norm(DIM),
               p + "self_attn.q_proj.weight": r(q, DIM),
               p + "self_attn.k_proj.weight": r(kv, DIM),
               p + "self_attn.v_proj.weight": r(kv, DIM),
               p + "self_attn.o_proj.weight": r(DIM, q),
               p + "post_attention_layernorm.weight": norm(DIM),
               p + "mlp.gate_proj.weight": r(FFN, DIM),
               p + "mlp.up_proj.weight": r(FFN, DIM),
               p + "mlp.down_proj.weight": r(DIM, FFN)}
        if arch == "qwen2":
            hf |= {p + "self_attn.q_proj.bias": r(q), p + "self_attn.k_proj.bias": r(kv),
                   p + "self_attn.v_proj.bias": r(kv)}
        else:
            hf |= {p + "self_attn.q_norm.weight": norm(hd), p + "self_attn.k_norm.weight": norm(hd)}
    hf["model.norm.weight"] = norm(DIM)
    if arch == "qwen3":
        hf["lm_head.weight"] = r(VOCAB, DIM)
    return hf, hd


def config(arch, hd):
    c = {"architectures": ["Qwen2ForCausalLM" if arch == "qwen2" else "Qwen3ForCausalLM"],
         "model_type": arch, "hidden_size": DIM, "intermediate_size": FFN,
         "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
         "num_key_value_heads": KV_HEADS, "max_position_embeddings": CTX,
         "rms_norm_eps": EPS, "rope_theta": THETA, "vocab_size": VOCAB,
         "tie_word_embeddings": arch == "qwen2", "use_sliding_window": False,
         "hidden_act": "silu", "torch_dtype": "float32"}
    if arch == "qwen3":
        c["head_dim"] = hd
        c["attention_bias"] = False
    return c


GG = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
      "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
      "self_attn.o_proj.weight": "attn_output.weight",
      "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
      "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight",
      "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
      "self_attn.v_proj.bias": "attn_v.bias", "self_attn.q_norm.weight": "attn_q_norm.weight",
      "self_attn.k_norm.weight": "attn_k_norm.weight"}


def gguf_name(hf):
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    if hf in top:
        return top[hf]
    _, _, l, rest = hf.split(".", 3)
    return f"blk.{l}.{GG[rest]}"


def write_gguf(path, arch, hf, hd):
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(CTX)
    w.add_embedding_length(DIM)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    if arch == "qwen3":
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(THETA)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("none")
    for name, t in hf.items():
        w.add_tensor(gguf_name(name), t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    for seed, arch in enumerate(["qwen2", "qwen3"]):
        rng = np.random.default_rng(100 + seed)
        hf, hd = weights(arch, rng)
        out = ROOT / f"tests/data/tiny-{arch}"
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config(arch, hd), indent=1) + "\n")
        save_file(hf, str(out / "model.safetensors"))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{arch}.gguf"
            write_gguf(path, arch, hf, hd)
            # An f32 KV cache (llama.cpp's default is f16), so that the two engines differ
            # only by the order of float operations.
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=CTX, n_batch=CTX, n_threads=2,
                                  logits_all=True, verbose=False, type_k=0, type_v=0)
            llm.eval(PROMPT)
            logits = np.array(llm.scores[: len(PROMPT)], dtype=np.float32)
            del llm
        ref = {"llama_cpp_python": llama_cpp.__version__,
               "system_info": llama_cpp.llama_print_system_info().decode().strip(),
               "prompt": PROMPT,
               "logits": [[round(float(v), 5) for v in row] for row in logits]}
        (out / "llamacpp_logits.json").write_text(json.dumps(ref, separators=(",", ":")) + "\n")
        print(f"{arch}: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
