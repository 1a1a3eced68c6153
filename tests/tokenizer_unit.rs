//! Streaming decoder, hostile inputs, GGUF-parts construction, pre-tokenizers.

use llq::tokenizer::{GgufTokenizerParts, PreTokenizer, TokenType, Tokenizer};
use serde_json::Value;

fn read(rel: &str) -> Vec<u8> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tokenizers/"
    )
    .to_string()
        + rel;
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

fn llama2() -> Tokenizer {
    Tokenizer::from_sentencepiece_model(&read("llama2-spm/tokenizer.model")).unwrap()
}

fn smollm2() -> Tokenizer {
    Tokenizer::from_hf_json(
        &read("smollm2-bpe/tokenizer.json"),
        Some(&read("smollm2-bpe/tokenizer_config.json")),
    )
    .unwrap()
}

fn stream_all(tok: &Tokenizer, ids: &[u32]) -> Vec<String> {
    let mut sd = tok.stream_decoder(false);
    let mut v: Vec<String> = ids.iter().map(|&id| sd.push(id)).collect();
    v.push(sd.flush());
    v
}

#[test]
fn stream_decoder_spm_split_emoji() {
    let tok = llama2();
    // "Hi 😀 there": ▁Hi ▁ <0xF0> <0x9F> <0x98> <0x80> ▁there
    let ids = [6324, 29871, 243, 162, 155, 131, 727];
    assert_eq!(tok.encode("Hi 😀 there", false), ids);
    let parts = stream_all(&tok, &ids);
    assert_eq!(parts, ["Hi", " ", "", "", "", "😀", " there", ""]);
    assert_eq!(parts.concat(), tok.decode(&ids, false));
    // Leading-space rule on the first piece, BOS does not count.
    assert_eq!(stream_all(&tok, &[1, 15043, 3186]).concat(), "Hello world");
    // A truncated emoji followed by a piece: one U+FFFD per byte, like sentencepiece.
    assert_eq!(
        stream_all(&tok, &[243, 162, 15043]).concat(),
        "\u{FFFD}\u{FFFD} Hello"
    );
    // Truncated at the end of the stream.
    assert_eq!(stream_all(&tok, &[243, 162]), ["", "", "\u{FFFD}\u{FFFD}"]);
}

#[test]
fn stream_decoder_bpe_split_emoji() {
    let tok = smollm2();
    let ids = tok.encode("Hi 😀 there", true);
    assert_eq!(ids, [26843, 40303, 218, 665]);
    let parts = stream_all(&tok, &ids);
    assert_eq!(parts, ["Hi", " ", "😀", " there", ""]);
    // Specials and skip flag.
    let mut sd = tok.stream_decoder(true);
    assert_eq!(sd.push(1), "");
    assert_eq!(sd.push(26843), "Hi");
    let mut sd = tok.stream_decoder(false);
    assert_eq!(sd.push(1), "<|im_start|>");
    // Incomplete at the end: a single U+FFFD, like from_utf8_lossy.
    assert_eq!(stream_all(&tok, &[40303]).concat(), " \u{FFFD}");
}

#[test]
fn special_ids_and_flags() {
    let l = llama2();
    assert_eq!(
        (l.bos_id(), l.eos_id(), l.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    assert!(l.add_bos());
    assert!(l.is_eog(2));
    assert!(l.is_special(1) && !l.is_special(15043));
    assert_eq!(l.token_piece(15043), "▁Hello".as_bytes());
    assert_eq!(l.vocab_size(), 32000);
    // parse_special for SPM: control tokens become single ids.
    assert_eq!(l.encode("<s>Hello</s>", true), [1, 15043, 2]);
    assert_eq!(l.encode("<s>", false), [529, 29879, 29958]);

    let s = smollm2();
    assert_eq!(
        (s.bos_id(), s.eos_id(), s.unk_id(), s.pad_id()),
        (Some(1), Some(2), Some(0), Some(2))
    );
    assert!(!s.add_bos());
    assert!(s.is_eog(2) && s.is_eog(0));
    assert_eq!(s.token_type(1), Some(TokenType::Control));
    assert_eq!(s.pre_tokenizer(), Some(PreTokenizer::SmolLm));
    // Untrusted text: specials are not parsed.
    assert_ne!(s.encode("<|im_start|>", false), [1]);
    assert_eq!(s.encode("<|im_start|>", true), [1]);
    assert_eq!(s.token_piece(905), "Ġworld".as_bytes());
}

#[test]
fn llama3_pre_tokenization_hand_checked() {
    let p = PreTokenizer::Llama3;
    let cases: &[(&str, &[&str])] = &[
        ("Hello, world!", &["Hello", ",", " world", "!"]),
        (
            "I've 12345 apples",
            &["I", "'ve", " ", "123", "45", " apples"],
        ),
        ("DON'T stop", &["DON", "'T", " stop"]),
        (
            "  indented\n\n\tcode();",
            &[" ", " indented", "\n\n", "\tcode", "();"],
        ),
        ("end.\r\n", &["end", ".\r\n"]),
        ("你好 世界", &["你好", " 世界"]),
        ("x   ", &["x", "   "]),
    ];
    for (text, want) in cases {
        assert_eq!(p.split_to_vec(text), *want, "{text:?}");
    }
    assert_eq!(
        PreTokenizer::Gpt2.split_to_vec("I've 12345"),
        ["I", "'ve", " 12345"]
    );
    assert_eq!(PreTokenizer::SmolLm.split_to_vec("a12"), ["a", "1", "2"]);
}

/// Deterministic pseudo-random bytes.
fn lcg(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

#[test]
fn hostile_from_bytes() {
    let good = llama2().to_bytes();
    let small = {
        // A small tokenizer keeps this test fast: SmolLM2 specials only.
        smollm2().to_bytes()
    };
    for bytes in [&good, &small] {
        for cut in (0..bytes.len())
            .step_by(bytes.len() / 97 + 1)
            .chain([bytes.len() - 1])
        {
            assert!(
                Tokenizer::from_bytes(&bytes[..cut]).is_err(),
                "truncated at {cut} accepted"
            );
        }
    }
    for seed in 0..50 {
        let g = lcg(seed, 64 + seed as usize * 13);
        assert!(Tokenizer::from_bytes(&g).is_err());
        // Valid header, garbage body.
        let mut h = good[..16].to_vec();
        h.extend_from_slice(&g);
        let _ = Tokenizer::from_bytes(&h);
    }
    // Bit flips in the header/count region must not panic.
    for i in 0..64 {
        let mut b = good.clone();
        b[i] ^= 0xff;
        let _ = Tokenizer::from_bytes(&b);
    }
    let e = Tokenizer::from_bytes(b"not a tokenizer")
        .unwrap_err()
        .to_string();
    assert!(e.contains("magic") || e.contains("needs"), "{e}");
}

#[test]
fn hostile_sentencepiece_model() {
    let good = read("llama2-spm/tokenizer.model");
    for cut in [1, 2, 3, 10, 100, 1000, 50_000, good.len() - 1] {
        let r = Tokenizer::from_sentencepiece_model(&good[..cut]);
        assert!(r.is_err(), "truncated model at {cut} accepted");
    }
    let e = Tokenizer::from_sentencepiece_model(&good[..1000])
        .unwrap_err()
        .to_string();
    assert!(e.contains("offset"), "{e}");
    for seed in 0..100 {
        let g = lcg(seed, 200);
        let _ = Tokenizer::from_sentencepiece_model(&g);
    }
    for i in (0..2000).step_by(7) {
        let mut b = good.clone();
        b[i] ^= 0x5a;
        if let Ok(t) = Tokenizer::from_sentencepiece_model(&b) {
            let _ = t.encode("Hello hostile world 😀", true);
        }
    }
    assert!(Tokenizer::from_sentencepiece_model(&[]).is_err());
}

#[test]
fn hostile_hf_json() {
    let good = read("smollm2-bpe/tokenizer.json");
    for cut in [0, 1, 100, 10_000, good.len() / 2, good.len() - 2] {
        let e = Tokenizer::from_hf_json(&good[..cut], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("JSON"), "{e}");
    }
    let cases: &[&[u8]] = &[
        b"{}",
        b"[]",
        b"{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}, \"merges\": []}}",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [7]}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}, \"merges\": []}}",
        b"{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"added_tokens\": [{\"id\": 4294967296, \"content\": \"x\"}]}",
    ];
    for c in cases {
        assert!(
            Tokenizer::from_hf_json(c, None).is_err(),
            "{}",
            String::from_utf8_lossy(c)
        );
    }
    let e = Tokenizer::from_hf_json(cases[2], None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Unigram"), "{e}");
    assert!(Tokenizer::from_hf_json(&good, Some(b"{oops")).is_err());
}

/// GGUF-parts path gives sentencepiece-identical results (SPM) and HF-identical (BPE).
#[test]
fn gguf_parts_reproduce_fixtures() {
    let l = llama2();
    let n = l.vocab_size() as u32;
    let parts = GgufTokenizerParts {
        model: "llama".into(),
        pre: None,
        tokens: (0..n).map(|i| l.token_piece(i).to_vec()).collect(),
        scores: Some((0..n).map(|i| l.token_score(i).unwrap()).collect()),
        token_types: Some((0..n).map(|i| l.token_type(i).unwrap() as i32).collect()),
        merges: None,
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        pad_id: None,
        eot_id: None,
        add_bos: Some(true),
        add_eos: Some(false),
        add_space_prefix: None,
    };
    let g = Tokenizer::from_gguf_parts(parts).unwrap();
    let cases = String::from_utf8(read("llama2-spm/cases.jsonl")).unwrap();
    let mut total = 0;
    for line in cases.lines() {
        let c: Value = serde_json::from_str(line).unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let text = c["text"].as_str().unwrap();
        assert_eq!(g.encode(text, false), want, "{text:?}");
        assert_eq!(g.decode(&want, false), l.decode(&want, false));
        total += 1;
    }
    println!("gguf-parts llama: {total}/{total} cases passed");

    // Byte-level: tokens/merges as a GGUF converter writes them.
    let j: Value = serde_json::from_slice(&read("smollm2-bpe/tokenizer.json")).unwrap();
    let vocab = j["model"]["vocab"].as_object().unwrap();
    let mut tokens = vec![Vec::new(); vocab.len()];
    for (k, v) in vocab {
        tokens[v.as_u64().unwrap() as usize] = k.as_bytes().to_vec();
    }
    let merges: Vec<String> = j["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap()))
        .collect();
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if i <= 16 { 3 } else { 1 })
        .collect();
    let g = Tokenizer::from_gguf_parts(GgufTokenizerParts {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        scores: None,
        token_types: Some(types),
        merges: Some(merges),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        pad_id: Some(2),
        eot_id: None,
        add_bos: Some(false),
        add_eos: None,
        add_space_prefix: None,
    })
    .unwrap();
    let cases = String::from_utf8(read("smollm2-bpe/cases.jsonl")).unwrap();
    let mut total = 0;
    for line in cases.lines() {
        let c: Value = serde_json::from_str(line).unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let text = c["text"].as_str().unwrap();
        assert_eq!(g.encode(text, true), want, "{text:?}");
        total += 1;
    }
    println!("gguf-parts gpt2/smollm: {total}/{total} cases passed");
    assert!(Tokenizer::from_gguf_parts(GgufTokenizerParts {
        model: "t5".into(),
        tokens: vec![b"a".to_vec()],
        ..Default::default()
    })
    .is_err());
}

#[test]
fn long_inputs_are_fast_enough() {
    let l = llama2();
    let s = smollm2();
    let text = "a".repeat(100_000);
    let t0 = std::time::Instant::now();
    let ids = l.encode(&text, false);
    assert!(!ids.is_empty());
    let ids2 = s.encode(&text, false);
    assert!(!ids2.is_empty());
    assert_eq!(s.decode(&ids2, false), text);
    assert_eq!(l.decode(&ids, false), text);
    println!("100k x 'a' both tokenizers: {:?}", t0.elapsed());
}

/// A Llama-3.1-style template (written for this test) exercising `strftime_now`,
/// `is defined`, `trim`, `namespace`, `tojson` and `raise_exception`.
#[test]
fn chat_template_llama3_style() {
    use llq::chat::{ChatError, ChatMessage, ChatTemplate};
    let src = r#"{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- set ns = namespace(system="") %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- ns.system + "<|eot_id|>" }}
{%- for message in messages %}
    {%- if message.role not in ['user', 'assistant'] %}
        {{- raise_exception("Unexpected role: " + message.role) }}
    {%- endif %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
{{- {"k": [1, 2]} | tojson }}"#;
    let t = ChatTemplate::new(src).unwrap();
    let msgs = [
        ChatMessage::new("system", "  Be brief. "),
        ChatMessage::new("user", "Hi\n"),
    ];
    let out = t
        .render(&msgs, true, "<|begin_of_text|>", "<|eot_id|>")
        .unwrap();
    assert!(
        out.starts_with(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nToday Date: "
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        ),
        "{out}"
    );
    assert!(
        out.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n{\"k\":[1,2]}")
            || out.ends_with("{\"k\": [1, 2]}"),
        "{out}"
    );
    let e = t
        .render(&[ChatMessage::new("tool", "x")], false, "", "")
        .unwrap_err();
    assert!(
        matches!(&e, ChatError::Raised(m) if m == "Unexpected role: tool"),
        "{e}"
    );
}

/// A tiny hand-made byte-level tokenizer.json with the Qwen2 split pattern and an
/// NFC normalizer: "e" + U+0301 (decomposed) must encode like "é" (composed).
#[test]
fn nfc_normalizer_and_qwen2_pattern() {
    let json = r#"{
      "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "1": 2, "2": 3, "Ã": 4, "©": 5, "Ã©": 6, "Ġ": 7, "e": 8, "Ì": 9, "ģ": 10},
                "merges": ["Ã ©"]},
      "normalizer": {"type": "NFC"},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]},
      "added_tokens": [{"id": 11, "content": "<|endoftext|>", "special": true}]
    }"#;
    let t = Tokenizer::from_hf_json(json.as_bytes(), None).unwrap();
    assert_eq!(t.pre_tokenizer(), Some(PreTokenizer::Qwen2));
    assert_eq!(t.encode("\u{e9}", true), [6]);
    assert_eq!(t.encode("e\u{301}", true), [6]);
    assert_eq!(t.encode("12<|endoftext|>", true), [2, 3, 11]);
    let back = Tokenizer::from_bytes(&t.to_bytes()).unwrap();
    assert_eq!(back.encode("e\u{301}", true), [6]);
    assert_eq!(t.decode(&[6, 11], false), "\u{e9}<|endoftext|>");
    assert_eq!(t.decode(&[6, 11], true), "\u{e9}");
}

/// A Llama-2-style HF tokenizer.json (BPE + byte_fallback + Metaspace), built
/// here from tokenizer.model's vocabulary with a merge list ordered by the
/// merged piece's score (as HF's converter writes it), reproduces sentencepiece.
#[test]
fn hf_json_spm_style_matches_sentencepiece() {
    let l = llama2();
    let mut vocab = serde_json::Map::new();
    let mut ids = std::collections::HashMap::new();
    for i in 0..l.vocab_size() as u32 {
        let p = String::from_utf8(l.token_piece(i).to_vec()).unwrap();
        vocab.insert(p.clone(), Value::from(i));
        ids.insert(p, i);
    }
    let mut rules: Vec<(f32, u32, String)> = Vec::new();
    for i in 0..l.vocab_size() as u32 {
        if l.token_type(i) != Some(llq::tokenizer::TokenType::Normal) {
            continue;
        }
        let p = String::from_utf8(l.token_piece(i).to_vec()).unwrap();
        for (k, _) in p.char_indices().skip(1) {
            let (a, b) = p.split_at(k);
            if ids.contains_key(a) && ids.contains_key(b) {
                rules.push((l.token_score(i).unwrap(), i, format!("{a} {b}")));
            }
        }
    }
    rules.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges: Vec<Value> = rules.into_iter().map(|r| Value::from(r.2)).collect();
    let json = serde_json::json!({
        "added_tokens": [
            {"id": 0, "content": "<unk>", "special": true},
            {"id": 1, "content": "<s>", "special": true},
            {"id": 2, "content": "</s>", "special": true}
        ],
        "normalizer": null,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u{2581}", "prepend_scheme": "first", "split": false},
        "decoder": {"type": "Sequence", "decoders": []},
        "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "fuse_unk": true,
                  "vocab": vocab, "merges": merges}
    });
    let cfg = br#"{"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}"#;
    let t = Tokenizer::from_hf_json(json.to_string().as_bytes(), Some(cfg)).unwrap();
    assert!(!t.is_byte_level());
    assert!(t.add_bos());
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    let cases = String::from_utf8(read("llama2-spm/cases.jsonl")).unwrap();
    let mut failures = Vec::new();
    let mut total = 0;
    for line in cases.lines() {
        let c: Value = serde_json::from_str(line).unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let text = c["text"].as_str().unwrap();
        if t.encode(text, false) != want {
            failures.push(text.to_string());
        }
        total += 1;
    }
    println!(
        "hf-json spm-style: {}/{total} cases passed",
        total - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(5)]
    );
}

/// A chat template is a program from a download: endless loops run out of fuel, and an
/// output larger than the cap stops the render, each as an error.
#[test]
fn chat_template_work_and_output_are_bounded() {
    use llq::chat::{ChatMessage, ChatTemplate};
    let msgs = [ChatMessage::new("user", "hi")];
    let t0 = std::time::Instant::now();
    let nested = ChatTemplate::new(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let e = nested.render(&msgs, true, "", "").unwrap_err().to_string();
    assert!(e.contains("fuel"), "{e}");
    let big =
        ChatTemplate::new("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}").unwrap();
    let e = big.render(&msgs, true, "", "").unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    assert!(t0.elapsed().as_secs() < 30, "{:?}", t0.elapsed());
}
