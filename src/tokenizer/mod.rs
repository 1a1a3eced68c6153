//! Native tokenizers: SentencePiece-style BPE with byte fallback (LLaMA 1/2,
//! TinyLlama, Mistral) and byte-level BPE (GPT-2 style: SmolLM, Llama 3,
//! Qwen2). No Python, no regex engine at run time.
//!
//! One [`Tokenizer`] type is built from a `tokenizer.model`, a `tokenizer.json`
//! (+ optional `tokenizer_config.json`), GGUF metadata parts, or the compact
//! binary form used inside `.llq` files ([`Tokenizer::to_bytes`]).

mod bpe;
mod decode;
mod gguf_parts;
mod hf_json;
mod index;
mod pretokenize;
mod sentencepiece_proto;
mod serialize;
mod specials;
mod spm;

use rustc_hash::FxHashMap;

use index::{ByteTable, PieceIndex};

pub use bpe::bytes_to_byte_level;
pub use decode::StreamDecoder;
pub use gguf_parts::GgufTokenizerParts;
pub use pretokenize::PreTokenizer;

/// Errors from building or loading a tokenizer. Every message says what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("malformed tokenizer JSON: {0}")]
    Json(String),
    #[error("malformed sentencepiece model protobuf at byte offset {offset}: {msg}")]
    Protobuf { offset: usize, msg: String },
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("invalid tokenizer data: {0}")]
    Invalid(String),
    #[error("malformed serialized tokenizer at byte offset {offset}: {msg}")]
    Serialized { offset: usize, msg: String },
}

/// Per-token type, numbered like sentencepiece / GGUF `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

impl TokenType {
    /// Maps a sentencepiece / GGUF type number; unknown numbers become `Normal`.
    pub fn from_i32(v: i32) -> TokenType {
        match v {
            2 => TokenType::Unknown,
            3 => TokenType::Control,
            4 => TokenType::UserDefined,
            5 => TokenType::Unused,
            6 => TokenType::Byte,
            _ => TokenType::Normal,
        }
    }
}

/// Settings of the SentencePiece (BPE, byte fallback) model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpmConfig {
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
    /// Recorded from the trainer spec; sentencepiece's BPE encoder does not
    /// consult it at encode time (it only shaped the vocabulary), so neither do we.
    pub split_digits: bool,
    pub byte_fallback: bool,
}

/// Which tokenization algorithm the tokenizer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelKind {
    Spm(SpmConfig),
    ByteLevel {
        pre: PreTokenizer,
        ignore_merges: bool,
        /// Apply Unicode NFC to text segments first (Qwen2's `NFC` normalizer).
        nfc: bool,
    },
}

/// Structures derived from the stored vocabulary at construction/load time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Derived {
    /// SPM: pieces that take part in merging (normal, user-defined, unused).
    /// BPE: every piece of the model vocabulary.
    pub piece_to_id: PieceIndex,
    /// SPM only: control / unknown / byte pieces (looked up first, like sentencepiece).
    pub reserved_to_id: PieceIndex,
    /// BPE: (left id, right id) -> (rank, merged id).
    pub merges: FxHashMap<(u32, u32), (u32, u32)>,
    /// SPM: id of `<0xNN>`; BPE: id of the byte-level symbol of the byte. u32::MAX = none.
    pub byte_to_id: Vec<u32>,
    /// Decoded bytes of each token (SPM: `▁` as space; BPE: byte-level decoded).
    pub decoded: ByteTable,
    /// SPM: for a byte token, its byte value.
    pub byte_value: Vec<Option<u8>>,
    pub specials: specials::SpecialMatcher,
    /// SPM user-defined pieces (matched greedily while splitting into symbols).
    pub user_defined: specials::SpecialMatcher,
    /// SPM: no piece has `▁` after another char (text can be chunked at `▁`).
    pub spm_space_splittable: bool,
}

/// A tokenizer. Cheap to share between threads (`&Tokenizer` is `Sync`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub(crate) kind: ModelKind,
    /// Raw piece bytes as stored by the model (SPM: with `▁`; BPE: byte-level string).
    pub(crate) pieces: ByteTable,
    pub(crate) scores: Vec<f32>,
    pub(crate) types: Vec<TokenType>,
    /// BPE merges in rank order, as (left id, right id).
    pub(crate) merge_list: Vec<(u32, u32)>,
    /// Merged id of each merge, when known (from the serialized form);
    /// empty = computed from the vocabulary in `finish`.
    pub(crate) merge_out: Vec<u32>,
    pub(crate) bos: Option<u32>,
    pub(crate) eos: Option<u32>,
    pub(crate) unk: Option<u32>,
    pub(crate) pad: Option<u32>,
    pub(crate) eog: Vec<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) d: Derived,
}

/// Names of tokens that end a turn / generation in common model families.
pub(crate) const EOG_NAMES: &[&str] = &[
    "<|im_end|>",
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "</s>",
];

impl Tokenizer {
    /// Loads a sentencepiece `tokenizer.model` (BPE type, e.g. LLaMA 1/2, Mistral).
    pub fn from_sentencepiece_model(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        sentencepiece_proto::build(bytes)
    }

    /// Loads a Hugging Face `tokenizer.json` (BPE model: byte-level or
    /// sentencepiece-style with byte fallback). `tokenizer_config_json` gives the
    /// bos/eos/unk/pad token names and `add_bos_token` / `add_eos_token`.
    pub fn from_hf_json(
        tokenizer_json: &[u8],
        tokenizer_config_json: Option<&[u8]>,
    ) -> Result<Tokenizer, TokenizerError> {
        hf_json::build(tokenizer_json, tokenizer_config_json)
    }

    /// Builds a tokenizer from the `tokenizer.ggml.*` metadata of a GGUF file.
    pub fn from_gguf_parts(parts: GgufTokenizerParts) -> Result<Tokenizer, TokenizerError> {
        gguf_parts::build(parts)
    }

    /// Serializes to the compact binary form (magic `LLQTOK\0\0`, version, little-endian).
    pub fn to_bytes(&self) -> Vec<u8> {
        serialize::to_bytes(self)
    }

    /// Loads the compact binary form written by [`Tokenizer::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Tokenizer, TokenizerError> {
        serialize::from_bytes(bytes)
    }

    /// Encode a prompt: BOS first when `add_special` is set and the tokenizer asks for one
    /// (`add_bos`), then the text. This is the one place where "add BOS, then encode" is
    /// decided; chat templates write BOS themselves and pass `add_special = false`.
    pub fn encode_prompt(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let mut ids = Vec::new();
        if add_special && self.add_bos() {
            ids.extend(self.bos_id());
        }
        ids.extend(self.encode(text, parse_special));
        ids
    }

    /// Encodes `text` to token ids. No BOS/EOS is added (see [`Tokenizer::add_bos`]).
    /// With `parse_special`, special/control tokens written in the text (e.g.
    /// `<|im_start|>`) become single tokens; turn it off for untrusted text.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        let mut scratch = bpe::Scratch::default();
        let use_cache = text.len() > 256;
        let mut cache = bpe::WordCache::default();
        let mut prev_special = true;
        self.d.specials.split(text, parse_special, |seg| match seg {
            specials::Segment::Text(s) => {
                match self.kind {
                    ModelKind::Spm(cfg) => {
                        spm::encode(self, &cfg, s, prev_special, &mut out);
                    }
                    ModelKind::ByteLevel { pre, nfc, .. } => {
                        let cache = if use_cache { Some(&mut cache) } else { None };
                        if nfc && !unicode_normalization::is_nfc(s) {
                            use unicode_normalization::UnicodeNormalization;
                            let n: String = s.nfc().collect();
                            bpe::encode(self, pre, &n, &mut scratch, None, &mut out);
                        } else {
                            bpe::encode(self, pre, s, &mut scratch, cache, &mut out);
                        }
                    }
                }
                prev_special = false;
            }
            specials::Segment::Token(id) => {
                out.push(id);
                prev_special = true;
            }
        });
        out
    }

    /// Decodes ids to text. Invalid UTF-8 becomes U+FFFD exactly as the reference
    /// implementations do. `skip_special` drops control/special tokens (SPM control
    /// tokens always decode to nothing, like sentencepiece). Unknown ids are skipped.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        decode::decode(self, ids, skip_special)
    }

    /// A streaming decoder that returns only complete UTF-8 text.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }

    /// The raw piece bytes of a token (SPM: with `▁`, `<0x0A>`; BPE: byte-level
    /// string like `Ġworld`). Empty for an out-of-range id.
    pub fn token_piece(&self, id: u32) -> &[u8] {
        self.pieces.get(id as usize)
    }

    /// The id of a piece given in its raw stored form, if present.
    pub fn piece_to_id(&self, piece: &[u8]) -> Option<u32> {
        self.d
            .reserved_to_id
            .get(piece)
            .or_else(|| self.d.piece_to_id.get(piece))
            .or_else(|| {
                // Added tokens that are not part of the merge vocabulary.
                self.pieces
                    .iter()
                    .position(|p| p == piece)
                    .map(|i| i as u32)
            })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    /// Ids that end generation (eos, end-of-turn tokens like `<|im_end|>`, `<|eot_id|>`).
    pub fn eog_ids(&self) -> &[u32] {
        &self.eog
    }
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }
    /// Whether prompts should start with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// Whether encoded sequences should end with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// The type of a token (None for an out-of-range id).
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }
    /// The score of a token (SPM merge priority; 0 or -id elsewhere).
    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }
    /// True for control and unknown tokens (`<s>`, `<|im_end|>`, `<unk>`, ...).
    pub fn is_special(&self, id: u32) -> bool {
        matches!(
            self.token_type(id),
            Some(TokenType::Control) | Some(TokenType::Unknown)
        )
    }
    /// True if this is a byte-level BPE tokenizer (GPT-2 style).
    pub fn is_byte_level(&self) -> bool {
        matches!(self.kind, ModelKind::ByteLevel { .. })
    }
    /// The pre-tokenizer family of a byte-level tokenizer.
    pub fn pre_tokenizer(&self) -> Option<PreTokenizer> {
        match self.kind {
            ModelKind::ByteLevel { pre, .. } => Some(pre),
            ModelKind::Spm(_) => None,
        }
    }

    /// Validates the stored parts and computes the derived lookup structures.
    pub(crate) fn finish(mut self) -> Result<Tokenizer, TokenizerError> {
        let n = self.pieces.len();
        if n == 0 {
            return Err(TokenizerError::Invalid("empty vocabulary".into()));
        }
        if n > u32::MAX as usize / 2 {
            return Err(TokenizerError::Invalid("vocabulary too large".into()));
        }
        if self.scores.len() != n || self.types.len() != n {
            return Err(TokenizerError::Invalid(format!(
                "{} pieces but {} scores and {} types",
                n,
                self.scores.len(),
                self.types.len()
            )));
        }
        for (name, id) in [
            ("bos", self.bos),
            ("eos", self.eos),
            ("unk", self.unk),
            ("pad", self.pad),
        ] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(TokenizerError::Invalid(format!(
                        "{name} id {id} out of range (vocab size {n})"
                    )));
                }
            }
        }
        self.eog.retain(|&id| (id as usize) < n);
        if let Some(e) = self.eos {
            if !self.eog.contains(&e) {
                self.eog.push(e);
            }
        }
        for name in EOG_NAMES {
            if let Some(i) = self.pieces.iter().position(|p| p == name.as_bytes()) {
                let i = i as u32;
                // `</s>` counts only when it is a control token (it is EOS in SPM models).
                if self.types[i as usize] == TokenType::Control && !self.eog.contains(&i) {
                    self.eog.push(i);
                }
            }
        }
        match self.kind {
            ModelKind::Spm(_) => spm::derive(&mut self)?,
            ModelKind::ByteLevel { .. } => bpe::derive(&mut self)?,
        }
        Ok(self)
    }
}
