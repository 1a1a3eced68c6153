#!/usr/bin/env python3
"""Writes the seed corpora that need no llq code (run from fuzz/): small HF checkpoints,
GGUF files, tokenizer sources and chat templates made from ../shared/fixtures. The
seeds that need the library (.llq files, compact tokenizers, prompt caches) come from
`cargo run --example seeds` afterwards, which reads `seeds/tiny-hf` written here.
Everything is kept small: the fuzzer's throughput falls with input size."""
import json, os, random, struct, sys

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../shared/fixtures")
SEP = b"\n--8<--\n"
rnd = random.Random(14)

def put(target, name, data):
    d = os.path.join("corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

# A tiny llama: dim 64, 2 heads of 32 (a q8_0 cache needs head_dim % 32 == 0), 1 kv head,
# ffn 64, 1 layer, vocab 300.
DIM, HEADS, KV, HD, FFN, LAYERS, VOCAB = 64, 2, 1, 32, 64, 1, 300
def shapes(tied=False):
    s = [("model.embed_tokens.weight", [VOCAB, DIM])]
    for l in range(LAYERS):
        p = f"model.layers.{l}."
        s += [(p + "input_layernorm.weight", [DIM]),
              (p + "self_attn.q_proj.weight", [HEADS * HD, DIM]),
              (p + "self_attn.k_proj.weight", [KV * HD, DIM]),
              (p + "self_attn.v_proj.weight", [KV * HD, DIM]),
              (p + "self_attn.o_proj.weight", [DIM, HEADS * HD]),
              (p + "post_attention_layernorm.weight", [DIM]),
              (p + "mlp.gate_proj.weight", [FFN, DIM]),
              (p + "mlp.up_proj.weight", [FFN, DIM]),
              (p + "mlp.down_proj.weight", [DIM, FFN])]
    s.append(("model.norm.weight", [DIM]))
    if not tied:
        s.append(("lm_head.weight", [VOCAB, DIM]))
    return s

def n(shape):
    r = 1
    for d in shape:
        r *= d
    return r

def safetensors(tensors, dtype="F16"):
    size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    header, data = {}, b""
    for name, shape in tensors:
        vals = [rnd.uniform(-0.5, 0.5) for _ in range(n(shape))]
        if dtype == "F32":
            raw = struct.pack(f"<{len(vals)}f", *vals)
        elif dtype == "F16":
            raw = struct.pack(f"<{len(vals)}e", *vals)
        else:
            raw = b"".join(struct.pack("<f", v)[2:] for v in vals)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

def config(tied=False, **extra):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM,
         "num_attention_heads": HEADS, "num_key_value_heads": KV, "head_dim": HD,
         "intermediate_size": FFN, "num_hidden_layers": LAYERS, "vocab_size": VOCAB,
         "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 128,
         "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2}
    c.update(extra)
    return json.dumps(c, indent=1).encode()

# --- tokenizer.json: the first VOCAB ids of SmolLM2's, with the merges they allow.
src = json.load(open(os.path.join(FIX, "tokenizers/smollm2-bpe/tokenizer.json")))
vocab = {k: v for k, v in src["model"]["vocab"].items() if v < VOCAB}
merges = [m for m in src["model"]["merges"]
          if (m if isinstance(m, list) else m.split(" "))[0] in vocab
          and (m if isinstance(m, list) else m.split(" "))[1] in vocab
          and "".join(m if isinstance(m, list) else m.split(" ")) in vocab]
tok = dict(src)
tok["model"] = dict(src["model"], vocab=vocab, merges=merges)
tok["added_tokens"] = [t for t in src["added_tokens"] if t["id"] < VOCAB]
tok_json = json.dumps(tok, ensure_ascii=False).encode()
template = open(os.path.join(FIX, "tokenizers/smollm2-bpe/chat_template.jinja"), "rb").read()
tok_cfg = json.dumps({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
                      "unk_token": "<|endoftext|>", "chat_template": template.decode()}).encode()

# The tiny HF checkpoint the Rust seed example converts to .llq (with this tokenizer).
os.makedirs("seeds/tiny-hf", exist_ok=True)
for name, data in [("config.json", config()), ("model.safetensors", safetensors(shapes(), "F16")),
                   ("tokenizer.json", tok_json), ("tokenizer_config.json", tok_cfg)]:
    open(os.path.join("seeds/tiny-hf", name), "wb").write(data)

# --- hf_checkpoint: config SEP safetensors [SEP index SEP shard 2]
put("hf_checkpoint", "single-f16", config() + SEP + safetensors(shapes(), "F16"))
put("hf_checkpoint", "single-bf16-tied", config(tied=True) + SEP + safetensors(shapes(True), "BF16"))
put("hf_checkpoint", "single-f32-rope-llama3", config(rope_scaling={"rope_type": "llama3", "factor": 8.0,
    "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    + SEP + safetensors(shapes(), "F32"))
sh = shapes()
a, b = sh[: len(sh) // 2], sh[len(sh) // 2:]
index = {"metadata": {}, "weight_map": {**{k: "model-00001-of-00002.safetensors" for k, _ in a},
                                         **{k: "model-00002-of-00002.safetensors" for k, _ in b}}}
put("hf_checkpoint", "sharded", config() + SEP + safetensors(a) + SEP + json.dumps(index).encode() + SEP + safetensors(b))
put("hf_checkpoint", "real-config-only", open(os.path.join(FIX, "tiny-llama-gqa/config.json"), "rb").read())

# --- gguf: a tiny llama (f32), with a small SPM-style vocab, and one file of every quant type.
def gstr(s):
    s = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(s)) + s
T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR = 4, 5, 6, 7, 8, 9
def kv_u32(k, v): return gstr(k) + struct.pack("<II", T_U32, v)
def kv_f32(k, v): return gstr(k) + struct.pack("<If", T_F32, v)
def kv_str(k, v): return gstr(k) + struct.pack("<I", T_STR) + gstr(v)
def kv_bool(k, v): return gstr(k) + struct.pack("<IB", T_BOOL, v)
def kv_arr(k, ty, items):
    body = b"".join(gstr(i) if ty == T_STR else struct.pack({T_F32: "<f", T_I32: "<i"}[ty], i) for i in items)
    return gstr(k) + struct.pack("<IIQ", T_ARR, ty, len(items)) + body

def gguf(kvs, tensors, align=32):
    """tensors: (name, dims innermost first, ggml type, raw bytes)"""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    off = 0
    for name, dims, ty, raw in tensors:
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, off)
        off += len(raw) + (-len(raw) % align)
    out += b"\0" * (-len(out) % align)
    for _, _, _, raw in tensors:
        out += raw + b"\0" * (-len(raw) % align)
    return out

GG = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
      "lm_head.weight": "output.weight", "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
      "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
      "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
      "mlp.down_proj": "ffn_down"}
def gname(hf):
    if hf in GG:
        return GG[hf]
    parts = hf.split(".")  # model.layers.L.x.y.weight
    return f"blk.{parts[2]}." + GG[".".join(parts[3:-1])] + ".weight"
pieces = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + ["▁", "▁t", "he", "▁the", "in", "er"]
pieces += [f"▁w{i}" for i in range(VOCAB - len(pieces))]
vocab_kvs = [kv_str("tokenizer.ggml.model", "llama"), kv_arr("tokenizer.ggml.tokens", T_STR, pieces),
             kv_arr("tokenizer.ggml.scores", T_F32, [-float(i) for i in range(VOCAB)]),
             kv_arr("tokenizer.ggml.token_type", T_I32, [2, 3, 3] + [6] * 256 + [1] * (VOCAB - 259)),
             kv_u32("tokenizer.ggml.bos_token_id", 1), kv_u32("tokenizer.ggml.eos_token_id", 2),
             kv_u32("tokenizer.ggml.unknown_token_id", 0), kv_bool("tokenizer.ggml.add_bos_token", 1),
             kv_str("tokenizer.chat_template", template.decode())]
hp = [kv_str("general.architecture", "llama"), kv_str("general.name", "tiny"),
      kv_u32("llama.embedding_length", DIM), kv_u32("llama.block_count", LAYERS),
      kv_u32("llama.feed_forward_length", FFN), kv_u32("llama.attention.head_count", HEADS),
      kv_u32("llama.attention.head_count_kv", KV), kv_u32("llama.context_length", 128),
      kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6), kv_f32("llama.rope.freq_base", 10000.0)]
ts = [(gname(nm), list(reversed(sh)), 0, struct.pack(f"<{n(sh)}f", *[rnd.uniform(-0.5, 0.5) for _ in range(n(sh))]))
      for nm, sh in shapes()]
put("gguf", "tiny-llama-f32-vocab", gguf(hp + vocab_kvs, ts))
ts16 = [(nm, d, 1 if len(d) > 1 else 0, struct.pack(f"<{n(d)}e", *struct.unpack(f"<{n(d)}f", raw)) if len(d) > 1 else raw)
        for nm, d, _, raw in ts]
put("gguf", "tiny-llama-f16-novocab", gguf(hp + [kv_u32("llama.vocab_size", VOCAB)], ts16))
# One 256-element tensor of each ggml type, random bytes (scales included): the dequantizers.
# (ggml ids, block size, bytes per block) for the types llama.cpp defines.
TYPES = [(0, 1, 4), (1, 1, 2), (2, 32, 18), (3, 32, 20), (6, 32, 22), (7, 32, 24), (8, 32, 34), (9, 32, 36),
         (10, 256, 84), (11, 256, 110), (12, 256, 144), (13, 256, 176), (14, 256, 210), (15, 256, 292),
         (16, 256, 66), (17, 256, 74), (18, 256, 98), (19, 256, 50), (20, 32, 18), (21, 256, 110),
         (22, 256, 82), (23, 256, 136), (24, 1, 1), (25, 1, 2), (26, 1, 4), (27, 1, 8), (28, 1, 8),
         (29, 256, 56), (30, 1, 2), (34, 256, 54), (35, 256, 66), (39, 32, 17)]
qt = []
for ty, bs, bb in TYPES:
    raw = bytearray(rnd.getrandbits(8) for _ in range(256 // bs * bb))
    qt.append((f"t{ty}", [256], ty, bytes(raw)))
put("gguf", "every-type", gguf([kv_str("general.architecture", "llama")], qt))

# A wide tiny llama (dim 256, so that rows are whole K-quant superblocks) whose matrices are
# stored in every type `convert` keeps as it is (Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q4_K Q5_K Q6_K):
# random code bytes with finite scales (the converter refuses non-finite ones). Converted
# with the default (keep) target it reaches every coded layout, the K-quant kernels and
# their kept-tensor checks; `cargo run --example seeds` also turns it into .llq seeds
# (reading it back from the gguf corpus).
WDIM, WHEADS, WKV, WHD, WFFN = 256, 2, 1, 128, 256
# ggml type: (block size, bytes per block, byte offsets of the block's f16 scales)
KEPT = {2: (32, 18, [0]), 3: (32, 20, [0, 2]), 6: (32, 22, [0]), 7: (32, 24, [0, 2]),
        8: (32, 34, [0]), 12: (256, 144, [0, 2]), 13: (256, 176, [0, 2]), 14: (256, 210, [208])}
def kept_tensor(rows, cols, ty):
    bs, bb, scales = KEPT[ty]
    out = bytearray()
    for _ in range(rows * cols // bs):
        blk = bytearray(rnd.getrandbits(8) for _ in range(bb))
        for o in scales:
            blk[o:o + 2] = struct.pack("<e", rnd.uniform(0.002, 0.02))
        out += blk
    return bytes(out)
wide = [("token_embd.weight", VOCAB, WDIM, 12), ("blk.0.attn_q.weight", WHEADS * WHD, WDIM, 6),
        ("blk.0.attn_k.weight", WKV * WHD, WDIM, 3), ("blk.0.attn_v.weight", WKV * WHD, WDIM, 14),
        ("blk.0.attn_output.weight", WDIM, WHEADS * WHD, 7), ("blk.0.ffn_gate.weight", WFFN, WDIM, 2),
        ("blk.0.ffn_up.weight", WFFN, WDIM, 13), ("blk.0.ffn_down.weight", WDIM, WFFN, 8),
        ("output.weight", VOCAB, WDIM, 14)]
wts = [(nm, [cols, rows], ty, kept_tensor(rows, cols, ty)) for nm, rows, cols, ty in wide]
wts += [(nm, [WDIM], 0, struct.pack(f"<{WDIM}f", *[rnd.uniform(0.5, 1.5) for _ in range(WDIM)]))
        for nm in ("blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "output_norm.weight")]
whp = [kv_str("general.architecture", "llama"), kv_str("general.name", "tiny-wide"),
       kv_u32("llama.embedding_length", WDIM), kv_u32("llama.block_count", 1),
       kv_u32("llama.feed_forward_length", WFFN), kv_u32("llama.attention.head_count", WHEADS),
       kv_u32("llama.attention.head_count_kv", WKV), kv_u32("llama.context_length", 128),
       kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6), kv_f32("llama.rope.freq_base", 10000.0)]
wide_gguf = gguf(whp + vocab_kvs, wts)
# The gguf target's last byte picks the conversion target; 0 is "keep".
put("gguf", "tiny-wide-every-kept-type", wide_gguf + b"\0")

# --- tokenizer: selector byte, then tokenizer bytes SEP text [SEP tokenizer_config.json]
text = "Hello world! The quick brown fox, 1234 — héllo 日本語 \n\t  <|im_start|>user".encode()
put("tokenizer", "hf-json-tiny", b"\x00" + tok_json + SEP + text + SEP + tok_cfg)

def varint(b, i):
    v = shift = 0
    while True:
        c = b[i]; i += 1
        v |= (c & 0x7F) << shift; shift += 7
        if c < 0x80:
            return v, i

def small_spm(raw, keep):
    """Llama 2's tokenizer.model with only its first `keep` pieces (unk, bos, eos, the
    256 byte pieces, the first merges) and its trainer and normalizer specs: the
    500 KB original would slow the fuzzer to a crawl."""
    out, i, n = b"", 0, 0
    while i < len(raw):
        start = i
        key, i = varint(raw, i)
        assert key & 7 == 2, "ModelProto's top-level fields are all length-delimited"
        ln, i = varint(raw, i)
        i += ln
        if key >> 3 == 1:
            n += 1
            if n > keep:
                continue
        out += raw[start:i]
    return out

spm = small_spm(open(os.path.join(FIX, "tokenizers/llama2-spm/tokenizer.model"), "rb").read(), 320)
put("tokenizer", "spm-llama2-320", b"\x01" + spm + SEP + text)
for i, line in enumerate(open(os.path.join(FIX, "tokenizers/smollm2-bpe/cases.jsonl"), encoding="utf-8")):
    if i >= 12:
        break
    t = json.loads(line).get("text", "")
    if isinstance(t, str) and len(t) < 2000:
        put("tokenizer", f"fixed-bpe-{i}", b"\x03" + t.encode())
        put("tokenizer", f"fixed-spm-{i}", b"\x04" + t.encode())

# --- lora: selector byte (bit 0: PEFT directory or one adapter file; bits 1-2: the scale),
# then `adapter_config.json` SEP `adapter_model.safetensors`, or the file. The fixtures'
# PEFT adapters for tiny-llama-gqa, and a llama.cpp GGUF LoRA made from the r8 one (lora_a
# ne = [in, r], lora_b ne = [r, out], f32; llama.cpp's q/k row permutation is skipped: a
# seed needs the structure, not the numbers). `cargo run --example seeds` adds llq adapter
# files written from it.
def read_safetensors(raw):
    hl = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + hl])
    body = raw[8 + hl:]
    return {k: (v["shape"], body[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}
LORA = os.path.join(FIX, "lora")
for i, name in enumerate(["tiny-llama-gqa-lora-r8", "tiny-llama-gqa-lora-rslora"]):
    cfgb = open(os.path.join(LORA, name, "adapter_config.json"), "rb").read()
    st = open(os.path.join(LORA, name, "adapter_model.safetensors"), "rb").read()
    put("lora", f"peft-{name}", bytes([2 * i]) + cfgb + SEP + st)
PEFT_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                "mlp.down_proj": "ffn_down"}
lts = []
for key, (shape, raw) in sorted(read_safetensors(open(os.path.join(LORA, "tiny-llama-gqa-lora-r8",
                                                                     "adapter_model.safetensors"), "rb").read()).items()):
    parts = key.split(".")  # base_model.model.model.layers.L.<module>.<proj>.lora_X.weight
    layer, module, ab = parts[4], ".".join(parts[5:7]), parts[7]
    lts.append((f"blk.{layer}.{PEFT_TO_GGUF[module]}.weight.{ab.lower()}", list(reversed(shape)), 0, raw))
lkv = [kv_str("general.architecture", "llama"), kv_str("general.type", "adapter"),
       kv_str("adapter.type", "lora"), kv_f32("adapter.lora.alpha", 16.0)]
put("lora", "gguf-lora-r8", b"\x01" + gguf(lkv, lts))

# --- imatrix: an imatrix.dat (llama.cpp's legacy layout), then one byte: 0 weights a q4_0
# conversion of seeds/tiny-hf, 1 a Q4_K_M conversion of the wide GGUF above.
def imatrix(widths, ncall=10, dataset=b"calibration.txt"):
    out = struct.pack("<i", len(widths))
    for name, w in widths:
        nb = name.encode()
        vals = [rnd.uniform(0.0, 4.0) * ncall for _ in range(w)]
        out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, w) + struct.pack(f"<{w}f", *vals)
    return out + struct.pack("<ii", ncall, len(dataset)) + dataset
PARTS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
put("imatrix", "tiny-hf-q4_0", imatrix([(f"blk.0.{p}.weight", DIM) for p in PARTS]) + b"\0")
put("imatrix", "tiny-wide-q4_k_m", imatrix([(f"blk.0.{p}.weight", WDIM) for p in PARTS]) + b"\1")

# --- chat_template: flags, template SEP messages
cases = [json.loads(l) for l in open(os.path.join(FIX, "tokenizers/smollm2-bpe/chat_template_cases.jsonl"), encoding="utf-8")]
for i, c in enumerate(cases):
    put("chat_template", f"smollm2-{i}", bytes([2 if c.get("add_generation_prompt") else 0]) + template + SEP + json.dumps(c["messages"]).encode())
put("chat_template", "tokenizer-config", b"\x01" + tok_cfg)
llama2 = (b"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          b"{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          b"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
          b"{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
          b"{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          b"{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
put("chat_template", "llama2", b"\x02" + llama2 + SEP + b"hello\nhi there\nhow are you?")
llama3 = (b"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
          b"{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
          b"{{ strftime_now('%d %b %Y') }}{% for i in range(3) %}{{ i ~ messages|length }}{% endfor %}{{ messages|tojson }}")
put("chat_template", "llama3-ish", b"\x02" + llama3 + SEP + b'[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]')
# --- gguf: a tiny Gemma 3 (after everything above, so the earlier seeds keep their bytes):
# two layers, the first with a 4-position sliding window (pattern 2: the second is
# global), so the harness's 9-token prompt and its next token reach the window's masks.
GKV = [kv_str("general.architecture", "gemma3"), kv_str("general.name", "tiny-gemma3"),
       kv_u32("gemma3.embedding_length", DIM), kv_u32("gemma3.block_count", 2),
       kv_u32("gemma3.feed_forward_length", FFN), kv_u32("gemma3.attention.head_count", HEADS),
       kv_u32("gemma3.attention.head_count_kv", KV), kv_u32("gemma3.attention.key_length", HD),
       kv_u32("gemma3.attention.value_length", HD), kv_u32("gemma3.context_length", 128),
       kv_f32("gemma3.attention.layer_norm_rms_epsilon", 1e-6), kv_f32("gemma3.rope.freq_base", 1e6),
       kv_u32("gemma3.attention.sliding_window", 4), kv_u32("gemma3.attention.sliding_window_pattern", 2),
       kv_bool("tokenizer.ggml.add_space_prefix", 0)]
def f32s(k, lo=-0.5, hi=0.5):
    return struct.pack(f"<{k}f", *[rnd.uniform(lo, hi) for _ in range(k)])
gts = [("token_embd.weight", [DIM, VOCAB], 0, f32s(DIM * VOCAB))]
for l in range(2):
    b = f"blk.{l}."
    gts += [(b + "attn_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)),
            (b + "attn_q.weight", [DIM, HEADS * HD], 0, f32s(DIM * HEADS * HD)),
            (b + "attn_k.weight", [DIM, KV * HD], 0, f32s(DIM * KV * HD)),
            (b + "attn_v.weight", [DIM, KV * HD], 0, f32s(DIM * KV * HD)),
            (b + "attn_output.weight", [HEADS * HD, DIM], 0, f32s(DIM * HEADS * HD)),
            (b + "ffn_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)),
            (b + "ffn_gate.weight", [DIM, FFN], 0, f32s(DIM * FFN)),
            (b + "ffn_up.weight", [DIM, FFN], 0, f32s(DIM * FFN)),
            (b + "ffn_down.weight", [FFN, DIM], 0, f32s(DIM * FFN)),
            (b + "attn_q_norm.weight", [HD], 0, f32s(HD, 0.5, 1.5)),
            (b + "attn_k_norm.weight", [HD], 0, f32s(HD, 0.5, 1.5)),
            (b + "post_attention_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)),
            (b + "post_ffw_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5))]
gts.append(("output_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)))
put("gguf", "tiny-gemma3-f32", gguf(GKV + vocab_kvs, gts) + b"\0")

# --- gguf: tiny Qwen2 (Q/K/V biases) and Qwen3 (per-head Q/K norms, head size 32 with a
# hidden size of 64 and 4 heads), one layer each, f32.
for arch in ("qwen2", "qwen3"):
    qheads = 4 if arch == "qwen3" else HEADS
    qkv = [kv_str("general.architecture", arch), kv_str("general.name", f"tiny-{arch}"),
           kv_u32(f"{arch}.embedding_length", DIM), kv_u32(f"{arch}.block_count", 1),
           kv_u32(f"{arch}.feed_forward_length", FFN), kv_u32(f"{arch}.attention.head_count", qheads),
           kv_u32(f"{arch}.attention.head_count_kv", KV), kv_u32(f"{arch}.attention.key_length", HD),
           kv_u32(f"{arch}.context_length", 128),
           kv_f32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6), kv_f32(f"{arch}.rope.freq_base", 1e6)]
    b = "blk.0."
    q = qheads * HD
    qts = [("token_embd.weight", [DIM, VOCAB], 0, f32s(DIM * VOCAB)),
           (b + "attn_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)),
           (b + "attn_q.weight", [DIM, q], 0, f32s(DIM * q)),
           (b + "attn_k.weight", [DIM, KV * HD], 0, f32s(DIM * KV * HD)),
           (b + "attn_v.weight", [DIM, KV * HD], 0, f32s(DIM * KV * HD)),
           (b + "attn_output.weight", [q, DIM], 0, f32s(DIM * q)),
           (b + "ffn_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)),
           (b + "ffn_gate.weight", [DIM, FFN], 0, f32s(DIM * FFN)),
           (b + "ffn_up.weight", [DIM, FFN], 0, f32s(DIM * FFN)),
           (b + "ffn_down.weight", [FFN, DIM], 0, f32s(DIM * FFN))]
    if arch == "qwen2":
        qts += [(b + "attn_q.bias", [q], 0, f32s(q)), (b + "attn_k.bias", [KV * HD], 0, f32s(KV * HD)),
                (b + "attn_v.bias", [KV * HD], 0, f32s(KV * HD))]
    else:
        qts += [(b + "attn_q_norm.weight", [HD], 0, f32s(HD, 0.5, 1.5)),
                (b + "attn_k_norm.weight", [HD], 0, f32s(HD, 0.5, 1.5))]
    qts.append(("output_norm.weight", [DIM], 0, f32s(DIM, 0.5, 1.5)))
    put("gguf", f"tiny-{arch}-f32", gguf(qkv + vocab_kvs, qts) + b"\0")

# --- hf_checkpoint: the tiny llama as Qwen2 (Q/K/V biases, tied) and Qwen3 (per-head norms).
q2 = shapes(True) + [(f"model.layers.0.self_attn.{p}_proj.bias", [n]) for p, n in
                     (("q", HEADS * HD), ("k", KV * HD), ("v", KV * HD))]
put("hf_checkpoint", "qwen2-f16-tied", config(tied=True, architectures=["Qwen2ForCausalLM"],
    model_type="qwen2", use_sliding_window=False) + SEP + safetensors(q2, "F16"))
q3 = shapes() + [(f"model.layers.0.self_attn.{p}_norm.weight", [HD]) for p in "qk"]
put("hf_checkpoint", "qwen3-bf16", config(architectures=["Qwen3ForCausalLM"], model_type="qwen3")
    + SEP + safetensors(q3, "BF16"))
print("seeds written")
