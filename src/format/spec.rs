//! Constants of the `.llq` format (see docs/FORMAT.md).

use crate::quant::{DType, WeightKind};

pub const MAGIC: [u8; 4] = *b"LLQF";
pub const VERSION_MAJOR: u16 = 1;
/// 1.1 added the `rows16` layout (a 1.0 reader refuses such files: "unknown layout id");
/// 1.2 the coded dtypes 4–9, ggml's q4_1 … q6_k (a 1.1 reader: "unknown dtype");
/// 1.3 the `rows16-sub` layout of q5_k and q6_k (a 1.2 reader: "unknown layout id").
pub const VERSION_MINOR: u16 = 3;

/// Size of the fixed header that starts every file.
pub const FIXED_HEADER_LEN: usize = 64;
/// Every tensor's data starts at a multiple of this (relative to the data section, which
/// itself starts at a multiple of [`DATA_ALIGN`]).
pub const TENSOR_ALIGN: u64 = 64;
/// The data section starts at a multiple of this (page size).
pub const DATA_ALIGN: u64 = 4096;

/// Upper bounds that keep a hostile file from asking for absurd allocations.
pub const MAX_KEY_LEN: usize = 1 << 10;
pub const MAX_NAME_LEN: usize = 1 << 10;
pub const MAX_DIMS: usize = 4;

/// Tensor element order inside the file: with the dtype code, what a tensor entry stores
/// of its [`WeightKind`] (see [`stored_codes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Layout {
    /// Row-major; for quantized types each row is a run of whole blocks.
    RowMajor = 0,
    /// Quantized 2-D matrices only: groups of 16 rows interleaved in 4-byte chunks, one
    /// superblock per 16 rows × 32 columns (see `quant::interleave` and docs/FORMAT.md).
    /// The row count is padded with zero rows to a multiple of 16.
    Rows16 = 1,
    /// `rows16` for the K-quants with high bits (q5_k, q6_k): each 32-column sub-block's
    /// high bits and nibbles lie next to each other, so a superblock is read in one
    /// stream (format 1.3; 1.2 wrote these two types as `rows16`, all high bits before
    /// all nibbles, which this llq no longer reads). For the other coded types the two
    /// orders are the same bytes, and they stay `rows16`.
    Rows16Sub = 2,
}

impl Layout {
    pub fn from_u32(v: u32) -> Option<Layout> {
        match v {
            0 => Some(Layout::RowMajor),
            1 => Some(Layout::Rows16),
            2 => Some(Layout::Rows16Sub),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Layout::RowMajor => "row-major",
            Layout::Rows16 => "rows16",
            Layout::Rows16Sub => "rows16-sub",
        }
    }
}

/// The (dtype, layout) codes a tensor of `kind` is stored with.
pub fn stored_codes(kind: WeightKind) -> (DType, Layout) {
    let layout = match kind {
        WeightKind::Q5_Kx16 | WeightKind::Q6_Kx16 => Layout::Rows16Sub,
        _ if kind.interleaved() => Layout::Rows16,
        _ => Layout::RowMajor,
    };
    (kind.dtype(), layout)
}

/// The weight kind stored as `(dtype, layout)`, or why llq cannot read that combination.
pub fn kind_from_codes(dtype: DType, layout: Layout) -> Result<WeightKind, String> {
    WeightKind::ALL
        .into_iter()
        .find(|k| stored_codes(*k) == (dtype, layout))
        .ok_or_else(|| match layout {
            // llq format 1.2 stored these with all high bits before all nibbles.
            Layout::Rows16 if matches!(dtype, DType::Q5_K | DType::Q6_K) => format!(
                "{} in the rows16 layout of format 1.2 is not supported: this llq reads it in the rows16-sub layout only (re-convert the model)",
                dtype.name()
            ),
            Layout::Rows16Sub => format!(
                "layout rows16-sub is for q5_k and q6_k matrices, not {}",
                dtype.name()
            ),
            Layout::Rows16 => format!(
                "layout rows16 needs a quantized 2-D tensor, not {}",
                dtype.name()
            ),
            // llq format 1.0 stored quantized matrices row-major.
            Layout::RowMajor => format!(
                "{} in the row-major layout is not supported: this llq reads quantized tensors in the rows16 layout only (re-convert the model)",
                dtype.name()
            ),
        })
}

/// Metadata keys written by the converter and read by the runtime.
pub mod keys {
    pub const ARCHITECTURE: &str = "general.architecture";
    pub const NAME: &str = "general.name";
    pub const SOURCE: &str = "general.source";
    pub const SOURCE_FILES: &str = "general.source_files";
    pub const CONVERTER: &str = "general.converter";
    pub const QUANTIZATION: &str = "general.quantization";
    /// Provenance of LoRA adapters merged at conversion, one entry per adapter in merge
    /// order: directory name, SHA-256 of `adapter_model.safetensors`, the user's scale and
    /// the adapter's own scaling (alpha/r or alpha/sqrt(r)).
    pub const LORA_NAMES: &str = "general.lora.names";
    pub const LORA_SHA256: &str = "general.lora.sha256";
    pub const LORA_SCALES: &str = "general.lora.scales";
    pub const LORA_SCALINGS: &str = "general.lora.scalings";

    pub const VOCAB_SIZE: &str = "llama.vocab_size";
    pub const CONTEXT_LENGTH: &str = "llama.context_length";
    pub const EMBEDDING_LENGTH: &str = "llama.embedding_length";
    pub const FEED_FORWARD_LENGTH: &str = "llama.feed_forward_length";
    pub const BLOCK_COUNT: &str = "llama.block_count";
    pub const HEAD_COUNT: &str = "llama.attention.head_count";
    pub const HEAD_COUNT_KV: &str = "llama.attention.head_count_kv";
    pub const HEAD_DIM: &str = "llama.attention.key_length";
    pub const RMS_EPS: &str = "llama.attention.layer_norm_rms_epsilon";
    pub const ROPE_THETA: &str = "llama.rope.freq_base";
    pub const ROPE_SCALING_TYPE: &str = "llama.rope.scaling.type";
    pub const ROPE_SCALING_FACTOR: &str = "llama.rope.scaling.factor";
    pub const ROPE_SCALING_LOW_FREQ: &str = "llama.rope.scaling.low_freq_factor";
    pub const ROPE_SCALING_HIGH_FREQ: &str = "llama.rope.scaling.high_freq_factor";
    pub const ROPE_SCALING_ORIG_CTX: &str = "llama.rope.scaling.original_context_length";
    pub const ROPE_FREQ_FACTORS: &str = "llama.rope.freq_factors";
    pub const TIED_EMBEDDINGS: &str = "llama.tie_word_embeddings";
    // Gemma 3 only (`general.architecture` = "gemma3"; the `llama.*` keys above hold
    // the hyper-parameters it shares with LLaMA).
    pub const GEMMA3_SLIDING_WINDOW: &str = "gemma3.attention.sliding_window";
    pub const GEMMA3_SLIDING_PATTERN: &str = "gemma3.attention.sliding_window_pattern";
    pub const GEMMA3_ROPE_THETA_LOCAL: &str = "gemma3.rope.freq_base_local";
    pub const GEMMA3_QUERY_PRE_ATTN_SCALAR: &str = "gemma3.attention.query_pre_attn_scalar";

    pub const BOS_ID: &str = "tokenizer.bos_token_id";
    pub const EOS_IDS: &str = "tokenizer.eos_token_ids";
    pub const TOKENIZER: &str = "tokenizer.llq";
    pub const TOKENIZER_JSON: &str = "tokenizer.source.tokenizer_json";
    pub const TOKENIZER_CONFIG_JSON: &str = "tokenizer.source.tokenizer_config_json";
    pub const TOKENIZER_MODEL: &str = "tokenizer.source.tokenizer_model";
    pub const CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// Round `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}
