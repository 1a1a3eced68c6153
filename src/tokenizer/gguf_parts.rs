//! Building a tokenizer from GGUF `tokenizer.ggml.*` metadata.

use super::index::ByteTable;
use super::spm::parse_byte_piece;
use super::{ModelKind, PreTokenizer, SpmConfig, TokenType, Tokenizer, TokenizerError};

/// The tokenizer metadata of a GGUF file, as read by the GGUF reader.
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerParts {
    /// `tokenizer.ggml.model`: `"llama"` (SentencePiece) or `"gpt2"` (byte-level BPE).
    pub model: String,
    /// `tokenizer.ggml.pre`: pre-tokenizer name (`"smollm"`, `"llama-bpe"`, `"gpt-2"`, ...).
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: piece strings as bytes.
    pub tokens: Vec<Vec<u8>>,
    /// `tokenizer.ggml.scores`.
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges` (`"a b"` in byte-level form).
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub eot_id: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    /// `tokenizer.ggml.add_space_prefix`: SentencePiece's dummy prefix (default true;
    /// false for Gemma).
    pub add_space_prefix: Option<bool>,
}

pub(crate) fn build(p: GgufTokenizerParts) -> Result<Tokenizer, TokenizerError> {
    let n = p.tokens.len();
    if n == 0 {
        return Err(TokenizerError::Invalid(
            "GGUF tokenizer has no tokens".into(),
        ));
    }
    if let Some(s) = &p.scores {
        if s.len() != n {
            return Err(TokenizerError::Invalid(format!(
                "{} tokens but {} scores",
                n,
                s.len()
            )));
        }
    }
    if let Some(t) = &p.token_types {
        if t.len() != n {
            return Err(TokenizerError::Invalid(format!(
                "{} tokens but {} token types",
                n,
                t.len()
            )));
        }
    }
    let is_spm = match p.model.as_str() {
        "llama" => true,
        "gpt2" => false,
        other => {
            return Err(TokenizerError::Unsupported(format!(
                "GGUF tokenizer model '{other}' (supported: llama, gpt2)"
            )))
        }
    };
    let types: Vec<TokenType> = match &p.token_types {
        Some(t) => t.iter().map(|&x| TokenType::from_i32(x)).collect(),
        None => p
            .tokens
            .iter()
            .enumerate()
            .map(|(i, tok)| {
                if is_spm && parse_byte_piece(tok).is_some() {
                    TokenType::Byte
                } else if Some(i as u32) == p.unk_id {
                    TokenType::Unknown
                } else if Some(i as u32) == p.bos_id || Some(i as u32) == p.eos_id {
                    TokenType::Control
                } else {
                    TokenType::Normal
                }
            })
            .collect(),
    };
    let scores = match p.scores {
        Some(s) => s,
        None => (0..n).map(|i| -(i as f32)).collect(),
    };
    let pieces: ByteTable = p.tokens.iter().collect();
    let mut merge_list = Vec::new();
    let kind = if is_spm {
        ModelKind::Spm(SpmConfig {
            add_dummy_prefix: p.add_space_prefix.unwrap_or(true),
            remove_extra_whitespaces: false,
            escape_whitespaces: true,
            split_digits: false,
            byte_fallback: types.contains(&TokenType::Byte),
        })
    } else {
        let pre = match p.pre.as_deref() {
            None => PreTokenizer::Gpt2,
            Some(name) => PreTokenizer::from_gguf_name(name).ok_or_else(|| {
                TokenizerError::Unsupported(format!("GGUF pre-tokenizer '{name}'"))
            })?,
        };
        let merges = p.merges.ok_or_else(|| {
            TokenizerError::Invalid("GGUF gpt2 tokenizer without tokenizer.ggml.merges".into())
        })?;
        let mut map: rustc_hash::FxHashMap<&[u8], u32> = rustc_hash::FxHashMap::default();
        for (i, t) in pieces.iter().enumerate() {
            map.entry(t).or_insert(i as u32);
        }
        merge_list.reserve(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| TokenizerError::Invalid(format!("merge {i} {m:?} has no space")))?;
            match (map.get(a.as_bytes()), map.get(b.as_bytes())) {
                (Some(&x), Some(&y)) => merge_list.push((x, y)),
                _ => {
                    return Err(TokenizerError::Invalid(format!(
                        "merge {i} {m:?} uses a token missing from the vocabulary"
                    )))
                }
            }
        }
        ModelKind::ByteLevel {
            pre,
            ignore_merges: pre == PreTokenizer::Llama3,
            nfc: false,
        }
    };
    let mut eog = Vec::new();
    if let Some(e) = p.eot_id {
        eog.push(e);
    }
    let tok = Tokenizer {
        kind,
        pieces,
        scores,
        types,
        merge_list,
        merge_out: Vec::new(),
        bos: p.bos_id,
        eos: p.eos_id,
        unk: p.unk_id,
        pad: p.pad_id,
        eog,
        add_bos: p.add_bos.unwrap_or(is_spm),
        add_eos: p.add_eos.unwrap_or(false),
        d: Default::default(),
    };
    tok.finish()
}
