//! The KV cache: per layer, the keys and values of `n_ctx` positions × kv heads × head_dim,
//! allocated once when a context is created and never reallocated.
//!
//! # Storage types
//!
//! `f32`, `f16` or `q8_0` (llama.cpp's Q8_0: 32-element blocks with an f16 scale, one run
//! of `head_dim / 32` blocks per head vector, so `q8_0` needs `head_dim % 32 == 0`).
//! Attention reads each type through the process's [`crate::kernels::Kernels`]: `dot_f32`,
//! `dot_f16`, or `dot_q8_0` against the query quantized to Q8_0 once per head (as
//! llama.cpp does); values are accumulated by the `axpy_*` kernels (see `axpy` below).
//!
//! **Default: `f16`** (the CLI's `--cache-type` on run, chat and perplexity). It halves the memory of `f32` and reads
//! through the SIMD `dot_f16`, while its error is far below what weight quantization costs
//! (measured on SmolLM2-135M, `tests/kv_cache.rs`: mean KL vs the f32 cache ≈ 1e-6 nats);
//! `q8_0` quarters the memory (plus scales) at a still small cost (KL ≈ 1e-3). The library
//! default ([`KvConfig::default`], used by `State::new`) stays `f32`, bit-identical to the
//! flat cache llq had before.
//!
//! # When the window is full: [`ContextPolicy`]
//!
//! `stop` refuses to evaluate past `n_ctx` positions. `shift` keeps the first `keep`
//! positions forever (StreamingLLM's "attention sinks") and overwrites the others in ring
//! order: stream position `i ≥ n_ctx` goes to slot `keep + (i - keep) mod (n_ctx - keep)`.
//! Nothing is ever re-evaluated. The CLI default is `shift` with `--keep 4` for `run` and
//! `chat` (endless generation is what a user who asks for more tokens than fit wants; 4
//! sinks is StreamingLLM's choice, and on SmolLM2 streaming perplexity with a 256 ring is
//! 14.79 with 4 sinks vs 25.72 with none), `stop` for the library ([`KvConfig::default`]).
//! `perplexity --streaming` always shifts.
//!
//! # RoPE with a ring
//!
//! Keys are stored **rotated by their absolute stream position**, exactly as before (so
//! nothing changes until the first wrap, and writing a key costs nothing extra). RoPE
//! scores depend only on `pos_q - pos_k`, so for every window (non-sink) key the query sees
//! the true distance — which is what StreamingLLM's "positions within the cache" gives the
//! window too, since the window is a contiguous run of the stream ending at the query.
//! The only keys whose absolute distance would be wrong are the sinks: their true distance
//! grows without bound, while StreamingLLM places them right before the oldest window
//! token. Instead of re-rotating stored keys (a pass over the whole cache per shift, or an
//! error-accumulating in-place rotation of quantized data), the query is rotated once per
//! head by `-delta` for the sink slots, `delta = pos_q - (n_ctx - 1)`: since rotations are
//! orthogonal, `(R(-delta) q) · R(j) k = q · R(j + delta) k`, i.e. sink `j` is scored as if
//! it sat at position `pos_q - (n_ctx - 1) + j` — the layout `[sinks][window]` of a
//! contiguous sequence of `n_ctx` tokens ending at the query. This costs `head_dim` work
//! per query head and works unchanged for f16/q8_0 storage. Positions keep growing; angles
//! of positions ≥ 2^16 are computed in f64 (see `Rope::angles`) so precision holds.
//!
//! A batch of tokens that evicts slots still attends exactly: before the batch's keys and
//! values are written, the old contents of the slots it overwrites are copied to a small
//! side buffer (at most `min(256, n_ctx - keep)` slots, allocated with the cache), and query
//! `t` of the batch reads the old contents of slots that later tokens of its batch
//! overwrote. So results do not depend on how a stream is cut into batches.

pub mod prompt_cache;

use half::f16;

use crate::error::{Error, Result};
use crate::quant::{BlockQ8_0, QK};

/// Most tokens one forward call may evaluate once it evicts (the side buffer's size).
pub const MAX_EVICT_BATCH: usize = 256;

/// Storage type of the cached keys and values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheType {
    #[default]
    F32,
    F16,
    Q8_0,
}

impl CacheType {
    pub const ALL: [CacheType; 3] = [CacheType::F32, CacheType::F16, CacheType::Q8_0];

    pub fn name(self) -> &'static str {
        match self {
            CacheType::F32 => "f32",
            CacheType::F16 => "f16",
            CacheType::Q8_0 => "q8_0",
        }
    }

    pub fn from_name(s: &str) -> Option<CacheType> {
        Self::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
    }

    /// Stable code used in prompt-cache files.
    pub fn code(self) -> u8 {
        match self {
            CacheType::F32 => 0,
            CacheType::F16 => 1,
            CacheType::Q8_0 => 2,
        }
    }

    /// Bytes to store `n` elements (`n` a multiple of 32 for q8_0).
    pub fn bytes_for(self, n: usize) -> usize {
        match self {
            CacheType::F32 => n * 4,
            CacheType::F16 => n * 2,
            CacheType::Q8_0 => n / QK * std::mem::size_of::<BlockQ8_0>(),
        }
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        CacheType::from_name(s).ok_or_else(|| format!("unknown cache type '{s}' (f32, f16, q8_0)"))
    }
}

/// What happens when the context window is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContextPolicy {
    /// Refuse to evaluate more than `n_ctx` positions.
    #[default]
    Stop,
    /// Keep the first `keep` positions, overwrite the rest in ring order.
    Shift,
}

impl std::str::FromStr for ContextPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stop" => Ok(ContextPolicy::Stop),
            "shift" => Ok(ContextPolicy::Shift),
            _ => Err(format!("unknown context policy '{s}' (stop, shift)")),
        }
    }
}

/// How a context's cache is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KvConfig {
    pub cache_type: CacheType,
    pub policy: ContextPolicy,
    /// Sink positions never evicted under [`ContextPolicy::Shift`].
    pub keep: usize,
}

/// Attention sinks kept by the `shift` policy unless told otherwise (StreamingLLM's 4).
pub const DEFAULT_KEEP: usize = 4;

impl KvConfig {
    /// What an interactive user wants (the CLI's `run` and `chat`): an f16 cache (half of
    /// f32's memory, mean KL ~1e-6) that shifts past the window keeping 4 attention sinks,
    /// so asking for more tokens than fit goes on instead of stopping. The library and the
    /// C API default to [`KvConfig::default`]: f32, exact, stop when full.
    pub const fn interactive() -> KvConfig {
        KvConfig {
            cache_type: CacheType::F16,
            policy: ContextPolicy::Shift,
            keep: DEFAULT_KEEP,
        }
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for ContextPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ContextPolicy::Stop => "stop",
            ContextPolicy::Shift => "shift",
        })
    }
}

/// The number of cached elements of K (or V) for `n_ctx` positions, checked before
/// anything is allocated: the arithmetic must not overflow, and K and V together must fit
/// in the machine's memory (a typo such as `-c 1000000000` is an error that says what
/// would fit, not an abort in the allocator).
fn check_size(t: CacheType, n_layers: usize, kv_dim: usize, n_ctx: usize) -> Result<usize> {
    let per_position = n_layers
        .checked_mul(kv_dim)
        .and_then(|e| e.checked_mul(2 * t.bytes_for(QK)))
        .map(|b| b / QK)
        .filter(|&b| b > 0)
        .ok_or_else(|| Error::usage("the model's KV dimensions overflow"))?;
    let bytes = (per_position as u128) * (n_ctx as u128);
    let elems = n_layers
        .checked_mul(n_ctx)
        .and_then(|e| e.checked_mul(kv_dim));
    let limit = crate::sys::physical_memory().unwrap_or(u64::MAX);
    match elems {
        Some(elems) if bytes <= limit as u128 => Ok(elems),
        _ => Err(Error::usage(format!(
            "a KV cache of {n_ctx} positions needs {} ({} cache, {n_layers} layers × {kv_dim} \
             per position for K and V), more than this machine's {} of memory; a context of \
             at most {} positions would fit",
            if bytes > u64::MAX as u128 {
                "more than 2^64 bytes".to_string()
            } else {
                crate::sys::human_bytes(bytes as u64)
            },
            t.name(),
            crate::sys::human_bytes(limit),
            limit / per_position as u64
        ))),
    }
}

/// One layer's worth of typed storage, or a view of it.
pub enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Q8_0(Vec<BlockQ8_0>),
}

/// Read-only view of (part of) a [`Store`], in storage units (elements or blocks).
#[derive(Clone, Copy)]
pub enum StoreRef<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Q8_0(&'a [BlockQ8_0]),
}

impl Store {
    fn new(t: CacheType, elems: usize) -> Store {
        match t {
            CacheType::F32 => Store::F32(vec![0.0; elems]),
            CacheType::F16 => Store::F16(vec![f16::ZERO; elems]),
            CacheType::Q8_0 => Store::Q8_0(vec![BlockQ8_0 { d: 0, qs: [0; QK] }; elems / QK]),
        }
    }

    fn allocated_bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.capacity() * 4,
            Store::F16(v) => v.capacity() * 2,
            Store::Q8_0(v) => v.capacity() * std::mem::size_of::<BlockQ8_0>(),
        }
    }

    fn addr(&self) -> usize {
        match self {
            Store::F32(v) => v.as_ptr() as usize,
            Store::F16(v) => v.as_ptr() as usize,
            Store::Q8_0(v) => v.as_ptr() as usize,
        }
    }

    /// View of elements `range` (element indices; multiples of 32 for q8_0).
    fn view(&self, range: std::ops::Range<usize>) -> StoreRef<'_> {
        match self {
            Store::F32(v) => StoreRef::F32(&v[range]),
            Store::F16(v) => StoreRef::F16(&v[range]),
            Store::Q8_0(v) => StoreRef::Q8_0(&v[range.start / QK..range.end / QK]),
        }
    }

    /// Store `src` (f32) at element offset `at`.
    fn write(&mut self, at: usize, src: &[f32]) {
        match self {
            Store::F32(v) => v[at..at + src.len()].copy_from_slice(src),
            Store::F16(v) => {
                for (d, s) in v[at..at + src.len()].iter_mut().zip(src) {
                    *d = f16::from_f32(*s);
                }
            }
            Store::Q8_0(v) => {
                let b = &mut v[at / QK..(at + src.len()) / QK];
                crate::quant::quantize_act_q8_0(src, b);
            }
        }
    }

    /// Copy `len` elements from `other` at `from` to `self` at `to` (same type).
    fn copy_from(&mut self, to: usize, other: &Store, from: usize, len: usize) {
        match (self, other) {
            (Store::F32(d), Store::F32(s)) => d[to..to + len].copy_from_slice(&s[from..from + len]),
            (Store::F16(d), Store::F16(s)) => d[to..to + len].copy_from_slice(&s[from..from + len]),
            (Store::Q8_0(d), Store::Q8_0(s)) => {
                d[to / QK..(to + len) / QK].copy_from_slice(&s[from / QK..(from + len) / QK])
            }
            _ => unreachable!("stores of one cache share a type"),
        }
    }

    /// Raw bytes of elements `range`.
    fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        use crate::quant::block_bytes;
        match self {
            Store::F32(v) => f32_bytes(&v[range]),
            Store::F16(v) => f16_bytes(&v[range]),
            Store::Q8_0(v) => block_bytes(&v[range.start / QK..range.end / QK]),
        }
    }

    /// Overwrite elements starting at `at` from raw bytes (length checked by the caller).
    fn set_bytes(&mut self, at: usize, bytes: &[u8]) {
        match self {
            Store::F32(v) => {
                for (d, c) in v[at..].iter_mut().zip(bytes.chunks_exact(4)) {
                    *d = f32::from_le_bytes(c.try_into().unwrap());
                }
            }
            Store::F16(v) => {
                for (d, c) in v[at..].iter_mut().zip(bytes.chunks_exact(2)) {
                    *d = f16::from_bits(u16::from_le_bytes([c[0], c[1]]));
                }
            }
            Store::Q8_0(v) => {
                let n = std::mem::size_of::<BlockQ8_0>();
                for (d, c) in v[at / QK..].iter_mut().zip(bytes.chunks_exact(n)) {
                    d.d = u16::from_le_bytes([c[0], c[1]]);
                    for (q, b) in d.qs.iter_mut().zip(&c[2..]) {
                        *q = *b as i8;
                    }
                }
            }
        }
    }
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns as bytes; the length is exact.
    // (Prompt-cache files are little-endian; llq only targets little-endian CPUs.)
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

fn f16_bytes(v: &[f16]) -> &[u8] {
    // SAFETY: f16 is a repr(transparent) u16.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// The cache of one context. Layout per layer: `[slot][kv_head][head_dim]`.
pub struct KvCache {
    cfg: KvConfig,
    n_ctx: usize,
    n_layers: usize,
    kv_dim: usize,
    /// Tokens evaluated since the last reset (the next token's RoPE position).
    pos: usize,
    k: Store,
    v: Store,
    /// Old contents of the slots the current batch overwrites, `[batch index][kv_dim]`
    /// (one layer at a time). Empty under `stop`.
    old_k: Store,
    old_v: Store,
    max_batch: usize,
}

impl KvCache {
    pub fn new(
        n_layers: usize,
        n_kv_heads: usize,
        head_dim: usize,
        n_ctx: usize,
        cfg: KvConfig,
    ) -> Result<KvCache> {
        if n_ctx == 0 {
            return Err(Error::usage("context size must be at least 1"));
        }
        if cfg.cache_type == CacheType::Q8_0 && !head_dim.is_multiple_of(QK) {
            return Err(Error::usage(format!(
                "cache type q8_0 needs head_dim to be a multiple of {QK}; this model's is {head_dim} (use f16)"
            )));
        }
        let max_batch = match cfg.policy {
            ContextPolicy::Stop => 0,
            ContextPolicy::Shift => {
                if cfg.keep >= n_ctx {
                    // Worded for every shell: the CLI calls it --keep, the C API n_keep.
                    return Err(Error::usage(format!(
                        "keeping {} positions leaves no room in a context of {n_ctx}: \
                         keep must be less than the context size",
                        cfg.keep
                    )));
                }
                MAX_EVICT_BATCH.min(n_ctx - cfg.keep)
            }
        };
        let kv_dim = n_kv_heads * head_dim;
        let elems = check_size(cfg.cache_type, n_layers, kv_dim, n_ctx)?;
        Ok(KvCache {
            cfg,
            n_ctx,
            n_layers,
            kv_dim,
            pos: 0,
            k: Store::new(cfg.cache_type, elems),
            v: Store::new(cfg.cache_type, elems),
            old_k: Store::new(cfg.cache_type, max_batch * kv_dim),
            old_v: Store::new(cfg.cache_type, max_batch * kv_dim),
            max_batch,
        })
    }

    pub fn config(&self) -> KvConfig {
        self.cfg
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Tokens evaluated since the last reset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Whether positions have been overwritten (the cache no longer holds a plain prefix).
    pub fn wrapped(&self) -> bool {
        self.pos > self.n_ctx
    }

    /// Positions currently held (at most `n_ctx`).
    pub fn len(&self) -> usize {
        self.pos.min(self.n_ctx)
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Largest batch a forward call may evaluate when it evicts positions.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Keep only the first `n` positions. After a wrap the cache holds no plain prefix,
    /// so anything but keeping everything resets it.
    pub fn truncate(&mut self, n: usize) {
        if n < self.pos {
            self.pos = if self.wrapped() { 0 } else { n };
        }
    }

    /// Bytes of the K and V storage (`n_layers × n_ctx × kv_dim` each).
    pub fn cache_bytes(&self) -> usize {
        2 * self
            .cfg
            .cache_type
            .bytes_for(self.n_layers * self.n_ctx * self.kv_dim)
    }

    /// Every byte this cache holds on the heap (storage plus the eviction side buffer),
    /// from the buffers' capacities. Constant for the cache's lifetime.
    pub fn allocated_bytes(&self) -> usize {
        self.k.allocated_bytes()
            + self.v.allocated_bytes()
            + self.old_k.allocated_bytes()
            + self.old_v.allocated_bytes()
    }

    /// Addresses of the four buffers (tests check they never move).
    pub fn buffer_addresses(&self) -> [usize; 4] {
        [
            self.k.addr(),
            self.v.addr(),
            self.old_k.addr(),
            self.old_v.addr(),
        ]
    }

    /// Slot of stream position `i`.
    pub fn slot(&self, i: usize) -> usize {
        if i < self.n_ctx {
            i
        } else {
            let keep = self.cfg.keep;
            keep + (i - keep) % (self.n_ctx - keep)
        }
    }

    /// Check that `n` more tokens may be evaluated.
    pub fn check_room(&self, n: usize) -> Result<()> {
        match self.cfg.policy {
            ContextPolicy::Stop if self.pos + n > self.n_ctx => Err(Error::usage(format!(
                "context full: {} positions used + {n} new > context size {}",
                self.pos, self.n_ctx
            ))),
            ContextPolicy::Shift if self.pos + n > self.n_ctx && n > self.max_batch => {
                Err(Error::usage(format!(
                    "a batch of {n} tokens that evicts positions exceeds {} (split it)",
                    self.max_batch
                )))
            }
            _ => Ok(()),
        }
    }

    /// Write layer `l`'s keys and values (`n × kv_dim` f32 each) of the tokens at stream
    /// positions `pos..pos + n`, first saving the old contents of slots they evict.
    pub fn store(&mut self, l: usize, k: &[f32], v: &[f32]) {
        let kd = self.kv_dim;
        let n = k.len() / kd;
        let base = l * self.n_ctx * kd;
        for t in 0..n {
            let i = self.pos + t;
            let at = base + self.slot(i) * kd;
            if i >= self.n_ctx {
                self.old_k.copy_from(t * kd, &self.k, at, kd);
                self.old_v.copy_from(t * kd, &self.v, at, kd);
            }
            self.k.write(at, &k[t * kd..(t + 1) * kd]);
            self.v.write(at, &v[t * kd..(t + 1) * kd]);
        }
    }

    /// Count `n` tokens as evaluated (after every layer stored them).
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// What attention needs to read layer `l` for a batch of `n` tokens.
    pub fn layer(&self, l: usize, n: usize) -> LayerView<'_> {
        let kd = self.kv_dim;
        let r = l * self.n_ctx * kd..(l + 1) * self.n_ctx * kd;
        let nb = n.min(self.max_batch) * kd;
        LayerView {
            k: self.k.view(r.clone()),
            v: self.v.view(r),
            old_k: self.old_k.view(0..nb),
            old_v: self.old_v.view(0..nb),
            pos: self.pos,
            n_ctx: self.n_ctx,
            keep: self.cfg.keep,
            n,
        }
    }

    /// Raw bytes of the first `n` slots of K then V, layer by layer (prompt cache).
    pub(crate) fn prefix_bytes(&self, n: usize, mut out: impl FnMut(&[u8])) {
        let kd = self.kv_dim;
        for l in 0..self.n_layers {
            let b = l * self.n_ctx * kd;
            out(self.k.bytes(b..b + n * kd));
        }
        for l in 0..self.n_layers {
            let b = l * self.n_ctx * kd;
            out(self.v.bytes(b..b + n * kd));
        }
    }

    /// Bytes of the K and V contents of `n` slots (what a prompt cache stores).
    pub fn prefix_len(&self, n: usize) -> usize {
        2 * self.n_layers * self.cfg.cache_type.bytes_for(n * self.kv_dim)
    }

    /// Load `n` slots from bytes made by [`KvCache::prefix_bytes`] (length checked by the
    /// caller) and set the position to `n`.
    pub(crate) fn load_prefix(&mut self, n: usize, bytes: &[u8]) {
        assert!(n <= self.n_ctx && bytes.len() == self.prefix_len(n));
        let kd = self.kv_dim;
        let per = self.cfg.cache_type.bytes_for(n * kd);
        for (i, chunk) in bytes.chunks_exact(per).enumerate() {
            let (store, l) = if i < self.n_layers {
                (&mut self.k, i)
            } else {
                (&mut self.v, i - self.n_layers)
            };
            store.set_bytes(l * self.n_ctx * kd, chunk);
        }
        self.pos = n;
    }
}

/// One layer of the cache as attention reads it, for a batch of `n` tokens at stream
/// positions `pos..pos + n` whose keys and values are already stored.
pub struct LayerView<'a> {
    pub k: StoreRef<'a>,
    pub v: StoreRef<'a>,
    /// Old contents of the slots the batch overwrote, by batch index.
    pub old_k: StoreRef<'a>,
    pub old_v: StoreRef<'a>,
    pub pos: usize,
    pub n_ctx: usize,
    pub keep: usize,
    pub n: usize,
}

impl LayerView<'_> {
    /// Slots visible to batch token `t`.
    pub fn visible(&self, t: usize) -> usize {
        (self.pos + t + 1).min(self.n_ctx)
    }

    /// How far the sinks are moved for batch token `t` (0 until the window is full).
    pub fn sink_delta(&self, t: usize) -> usize {
        (self.pos + t + 1).saturating_sub(self.n_ctx)
    }

    /// Whether some later token of the batch evicted a slot token `t` must still see.
    pub fn has_future_evictions(&self, t: usize) -> bool {
        t + 1 < self.n && self.pos + self.n > self.n_ctx
    }

    /// If slot `s` was overwritten by a token of the batch after `t`, the batch index
    /// whose saved old contents token `t` must read instead.
    pub fn evicted_by_later(&self, s: usize, t: usize) -> Option<usize> {
        // A batch that evicts starts past the sinks (it is at most n_ctx - keep long).
        if s < self.keep || self.pos < self.keep {
            return None;
        }
        let ring = self.n_ctx - self.keep;
        // The batch index u with (pos + u - keep) ≡ s - keep (mod ring).
        let u = (s - self.keep + ring - (self.pos - self.keep) % ring) % ring;
        (u > t && u < self.n && self.pos + u >= self.n_ctx).then_some(u)
    }
}

/// `out += p × row` for each storage type (values).
pub fn axpy(k: &crate::kernels::Kernels, out: &mut [f32], p: f32, row: StoreRef<'_>) {
    match row {
        StoreRef::F32(v) => (k.axpy_f32)(out, p, v),
        StoreRef::F16(v) => (k.axpy_f16)(out, p, v),
        StoreRef::Q8_0(blocks) => {
            for (o, b) in out.chunks_exact_mut(QK).zip(blocks) {
                let d = b.scale();
                for (a, q) in o.iter_mut().zip(b.qs) {
                    *a += p * (q as f32 * d);
                }
            }
        }
    }
}
