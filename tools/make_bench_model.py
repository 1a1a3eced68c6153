#!/usr/bin/env python3
"""Write a benchmark model with TinyLlama-1.1B's exact shape and deterministic random
weights, twice: as a Hugging Face checkpoint (config.json + sharded f16 safetensors +
the Llama 2 tokenizer.model) and as an f16 GGUF for llama.cpp (same weights; Q/K rows
permuted the way llama.cpp's converter does, Llama 2 vocabulary from the fixture GGUF).

    python3 tools/make_bench_model.py [--out .cache/bench-models/tinyllama-shape] [--layers 22]

Needs: pip install numpy safetensors gguf
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "shared", "fixtures")

SHAPE = dict(hidden=2048, layers=22, heads=32, kv_heads=4, ffn=5632, vocab=32000, ctx=2048)


def tensors(cfg, seed):
    """Yield (hf_name, array f16) in a fixed order; the same seed gives the same weights."""
    rng = np.random.default_rng(seed)
    d, f, v = cfg["hidden"], cfg["ffn"], cfg["vocab"]
    hd = d // cfg["heads"]
    q, kv = cfg["heads"] * hd, cfg["kv_heads"] * hd

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float16)

    yield "model.embed_tokens.weight", mat(v, d)
    for i in range(cfg["layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", norm(d)
        yield p + "self_attn.q_proj.weight", mat(q, d)
        yield p + "self_attn.k_proj.weight", mat(kv, d)
        yield p + "self_attn.v_proj.weight", mat(kv, d)
        yield p + "self_attn.o_proj.weight", mat(d, q)
        yield p + "post_attention_layernorm.weight", norm(d)
        yield p + "mlp.gate_proj.weight", mat(f, d)
        yield p + "mlp.up_proj.weight", mat(f, d)
        yield p + "mlp.down_proj.weight", mat(d, f)
    yield "model.norm.weight", norm(d)
    yield "lm_head.weight", mat(v, d)


def write_hf(out, cfg, seed, shard_bytes=1 << 30):
    from safetensors.numpy import save_file

    os.makedirs(out, exist_ok=True)
    shards, cur, size = [], {}, 0
    for name, a in tensors(cfg, seed):
        if cur and size + a.nbytes > shard_bytes:
            shards.append(cur)
            cur, size = {}, 0
        cur[name] = a
        size += a.nbytes
    shards.append(cur)
    weight_map, total = {}, 0
    for i, s in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(s, os.path.join(out, fn))
        for n, a in s.items():
            weight_map[n] = fn
            total += a.nbytes
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh, indent=2)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg["hidden"],
        "intermediate_size": cfg["ffn"],
        "num_hidden_layers": cfg["layers"],
        "num_attention_heads": cfg["heads"],
        "num_key_value_heads": cfg["kv_heads"],
        "vocab_size": cfg["vocab"],
        "max_position_embeddings": cfg["ctx"],
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
    }
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    tok = os.path.join(FIXTURES, "tokenizers", "llama2-spm", "tokenizer.model")
    if os.path.exists(tok):
        shutil.copy(tok, os.path.join(out, "tokenizer.model"))


def permute(w, n_head):
    """llama.cpp's converter order for Q/K rows (interleaved RoPE pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
}


def write_gguf(path, cfg, seed):
    import gguf

    vocab = gguf.GGUFReader(os.path.join(FIXTURES, "tokenizers", "llamacpp-vocab", "ggml-vocab-llama-spm.gguf"))

    def field(name):
        f = vocab.fields[name]
        return [f.parts[i] for i in f.data]

    tokens = [bytes(p) for p in field("tokenizer.ggml.tokens")]
    scores = [float(p[0]) for p in field("tokenizer.ggml.scores")]
    types = [int(p[0]) for p in field("tokenizer.ggml.token_type")]

    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tinyllama-shape-random")
    w.add_context_length(cfg["ctx"])
    w.add_embedding_length(cfg["hidden"])
    w.add_block_count(cfg["layers"])
    w.add_feed_forward_length(cfg["ffn"])
    w.add_head_count(cfg["heads"])
    w.add_head_count_kv(cfg["kv_heads"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(cfg["hidden"] // cfg["heads"])
    w.add_vocab_size(cfg["vocab"])
    w.add_file_type(1)  # mostly f16
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    for name, a in tensors(cfg, seed):
        if name == "model.embed_tokens.weight":
            g = "token_embd.weight"
        elif name == "model.norm.weight":
            g = "output_norm.weight"
        elif name == "lm_head.weight":
            g = "output.weight"
        else:
            i, rest = name[len("model.layers."):].split(".", 1)
            g = f"blk.{i}.{GGUF_NAMES[rest.rsplit('.', 1)[0]]}.weight"
        if name.endswith("q_proj.weight"):
            a = permute(a, cfg["heads"])
        elif name.endswith("k_proj.weight"):
            a = permute(a, cfg["kv_heads"])
        if a.ndim == 1:
            a = a.astype(np.float32)  # norms stay f32, as llama.cpp's converter writes them
        w.add_tensor(g, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", ".cache", "bench-models", "tinyllama-shape"))
    ap.add_argument("--layers", type=int, default=SHAPE["layers"])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--no-gguf", action="store_true")
    a = ap.parse_args()
    cfg = dict(SHAPE, layers=a.layers)
    write_hf(os.path.join(a.out, "hf"), cfg, a.seed)
    print(f"wrote {a.out}/hf", file=sys.stderr)
    if not a.no_gguf:
        write_gguf(os.path.join(a.out, "model.f16.gguf"), cfg, a.seed)
        print(f"wrote {a.out}/model.f16.gguf", file=sys.stderr)


if __name__ == "__main__":
    main()
