//! llama.cpp's vocab-only GGUF (`llamacpp-vocab/ggml-vocab-llama-spm.gguf`) through
//! `Tokenizer::from_gguf_parts`, checked against its `.inp/.out` vectors. The GGUF
//! metadata is read by a minimal test-only parser (the real reader lives elsewhere).

use std::collections::HashMap;

use llq::tokenizer::{GgufTokenizerParts, Tokenizer};

#[derive(Debug, Clone)]
enum V {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    S(Vec<u8>),
    A(Vec<V>),
}

struct R<'a> {
    b: &'a [u8],
    p: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.p..self.p + n];
        self.p += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> Vec<u8> {
        let n = self.u64() as usize;
        self.take(n).to_vec()
    }
    fn value(&mut self, ty: u32) -> V {
        match ty {
            0 => V::U(self.take(1)[0] as u64),
            1 => V::I(self.take(1)[0] as i8 as i64),
            2 => V::U(u16::from_le_bytes(self.take(2).try_into().unwrap()) as u64),
            3 => V::I(i16::from_le_bytes(self.take(2).try_into().unwrap()) as i64),
            4 => V::U(self.u32() as u64),
            5 => V::I(self.u32() as i32 as i64),
            6 => V::F(f32::from_bits(self.u32()) as f64),
            7 => V::B(self.take(1)[0] != 0),
            8 => V::S(self.string()),
            9 => {
                let et = self.u32();
                let n = self.u64() as usize;
                V::A((0..n).map(|_| self.value(et)).collect())
            }
            10 => V::U(self.u64()),
            11 => V::I(self.u64() as i64),
            12 => V::F(f64::from_bits(self.u64())),
            t => panic!("unknown GGUF type {t}"),
        }
    }
}

fn read_kv(bytes: &[u8]) -> HashMap<String, V> {
    let mut r = R { b: bytes, p: 0 };
    assert_eq!(r.take(4), b"GGUF");
    assert_eq!(r.u32(), 3);
    let _tensors = r.u64();
    let n_kv = r.u64();
    (0..n_kv)
        .map(|_| {
            let k = String::from_utf8(r.string()).unwrap();
            let ty = r.u32();
            (k, r.value(ty))
        })
        .collect()
}

#[test]
fn llamacpp_spm_vocab_via_gguf_parts() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tokenizers/llamacpp-vocab/"
    );
    let kv = read_kv(&std::fs::read(format!("{dir}ggml-vocab-llama-spm.gguf")).unwrap());
    let arr = |k: &str| match kv.get(k) {
        Some(V::A(a)) => a.clone(),
        other => panic!("{k}: {other:?}"),
    };
    let id = |k: &str| match kv.get(k) {
        Some(V::U(x)) => Some(*x as u32),
        Some(V::I(x)) => Some(*x as u32),
        _ => None,
    };
    let flag = |k: &str| match kv.get(k) {
        Some(V::B(b)) => Some(*b),
        _ => None,
    };
    let model = match kv.get("tokenizer.ggml.model") {
        Some(V::S(s)) => String::from_utf8(s.clone()).unwrap(),
        other => panic!("{other:?}"),
    };
    let parts = GgufTokenizerParts {
        model,
        pre: None,
        tokens: arr("tokenizer.ggml.tokens")
            .into_iter()
            .map(|v| match v {
                V::S(s) => s,
                o => panic!("{o:?}"),
            })
            .collect(),
        scores: Some(
            arr("tokenizer.ggml.scores")
                .into_iter()
                .map(|v| match v {
                    V::F(f) => f as f32,
                    o => panic!("{o:?}"),
                })
                .collect(),
        ),
        token_types: Some(
            arr("tokenizer.ggml.token_type")
                .into_iter()
                .map(|v| match v {
                    V::I(i) => i as i32,
                    V::U(u) => u as i32,
                    o => panic!("{o:?}"),
                })
                .collect(),
        ),
        merges: None,
        bos_id: id("tokenizer.ggml.bos_token_id"),
        eos_id: id("tokenizer.ggml.eos_token_id"),
        unk_id: id("tokenizer.ggml.unknown_token_id"),
        pad_id: id("tokenizer.ggml.padding_token_id"),
        eot_id: None,
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
    };
    let tok = Tokenizer::from_gguf_parts(parts).unwrap();
    assert_eq!(
        (tok.bos_id(), tok.eos_id(), tok.unk_id()),
        (Some(1), Some(2), Some(0))
    );
    let inp = std::fs::read_to_string(format!("{dir}ggml-vocab-llama-spm.gguf.inp")).unwrap();
    let out = std::fs::read_to_string(format!("{dir}ggml-vocab-llama-spm.gguf.out")).unwrap();
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    assert_eq!(texts.pop(), Some(""));
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), expected.len());
    let mut failures = Vec::new();
    for (text, line) in texts.iter().zip(&expected) {
        let want: Vec<u32> = line
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tok.encode(text, false);
        if got != want {
            failures.push(format!("  {text:?}\n    want {want:?}\n    got  {got:?}"));
        }
        // llama.cpp's test also checks that detokenizing gives the text back
        // (modulo the leading space its SPM path adds/removes).
        let back = tok.decode(&got, false);
        if back != *text && format!(" {back}") != *text {
            failures.push(format!("  round trip {text:?} -> {back:?}"));
        }
    }
    println!(
        "llamacpp-vocab via gguf parts: {}/{} cases passed",
        texts.len() - failures.len().min(texts.len()),
        texts.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
