//! Group kernels of the coded `rows16` types (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K; layout in
//! `quant::kx16`), written once over the type for each ISA. They work like the Q4_0
//! kernels of `rows16.rs` (read its module comment): a register holds 4 consecutive codes
//! of 16 rows (zmm) or 8 rows (ymm), the activations' 4 bytes are broadcast, and each
//! 32-bit lane accumulates its own row.
//!
//! * Codes: chunk `c` (codes `4c..4c+4`) is the low (`c < 4`) or high nibble of the
//!   sub-block's 64-byte nibble chunk `c % 4`, or-ed with its high bits moved to bits
//!   4–5: bit `c` of the fifth-bit plane, or bits `2(c % 4)`, `+1` of 6-bit plane `c / 4`.
//!   Codes are unsigned (≤ 63), so they are `vpdpbusd`'s / `vpmaddubsw`'s u8 operand.
//! * Integers: `vpdpbusd` on avx512vnni, one chain per 16-column half; 256-bit `vpdpbusd`
//!   on avxvnni, with both 8-row halves of a chunk in one pass (each activation broadcast
//!   serves both, as in `rows16`'s 256-bit tiles; measured 1.4–1.5× the `avx2` tile's
//!   prompt speed for Q4_K_M and Q6_K on a Zen 5), and on avx512vnni for one token of
//!   Q6_K (EVEX encoding; see [`Coded::DECODE_256`]). AVX2's
//!   `vpmaddubsw` pairs reach 2·63·128 for 6-bit codes, so pair sums stay in i16 only over
//!   `8 >> HIGH_BITS` chunks (≤ 8·2·15·128, 4·2·31·128, 2·2·63·128, all < 2^15) before
//!   `vpmaddwd` widens them; for the K-quants it widens them against the sub-scales, so
//!   AVX2 applies those in integers (see [`Maddubs`]).
//! * Code vectors: the 256-bit levels form them once per row group into a buffer when a
//!   prompt's tiles share them and forming is dear (see [`preform`]); otherwise, and on
//!   avx512vnni (whose tiles of up to 32 tokens share each one already), per tile.
//! * Scales: per superblock, [`Coded::raw`] exposes the rows' f16 `d` (one `vcvtph2ps`),
//!   the integer sub-scales as 16 i8 per slot (Q6_K's are stored so; Q4_K's and Q5_K's
//!   packed 6-bit scales and mins are unpacked for the 16 rows with byte ops), and `B`'s
//!   own f16 field. Per sub-block, `S = d · sc` is one `vpmovsxbd` + convert + multiply.
//!   Where `B = OFF · S` (Q5_0: −16, Q6_K: −32), `OFF · Σx` starts the integer sum, as
//!   Q4_0's −8·Σx does; otherwise `B · d_x·Σx` is one more FMA (Q4_1, Q5_1), or, with
//!   integer mins (Q4_K, Q5_K), `Σ mn · d_x·Σx` accumulates in a chain of its own that is
//!   scaled by `−dmin` once per superblock (measured ~7% faster at one token). (AVX2's
//!   K-quant tile instead forms `sc · I` in integers and multiplies by `d` per superblock.)
//!   All `S`, `B` are the exact products the reference computes (f16 × 6- or 8-bit
//!   integer, or × a power of two), so only the order of the float sums differs from it.
//!
//! Every function here is reachable only through the kernel tables of `x86`, installed
//! after `is_x86_feature_detected!` confirmed the features each function enables.

use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

use super::rows16::load64;
use super::{prefetch_ahead, prefetch_at};
use crate::kernels::{group_dims_sub, CodedKernels};
use crate::quant::interleave::{ActQ8, GROUP};
use crate::quant::kx16::{
    BlockQ4_1x16, BlockQ4_Kx16, BlockQ5_0x16, BlockQ5_1x16, BlockQ5_Kx16, BlockQ6_Kx16, CodedX16,
};

/// Bytes of one plane of high bits per sub-block.
const PLANE: usize = 64;

/// `$v` shifted by the run-time `$n` (`|n| ≤ 4`, left if positive) with the immediate
/// shifts `$sll` / `$srl`: at every call `n` is a constant after inlining, so one
/// instruction remains.
macro_rules! shift_by {
    ($v:expr, $n:expr, $sll:ident, $srl:ident) => {
        match $n {
            4 => $sll::<4>($v),
            3 => $sll::<3>($v),
            2 => $sll::<2>($v),
            1 => $sll::<1>($v),
            0 => $v,
            -1 => $srl::<1>($v),
            -2 => $srl::<2>($v),
            _ => $srl::<3>($v),
        }
    };
}

/// Where chunk `c`'s high code bits are, for a type with `hb` of them per code: the
/// plane, the shift (left if positive) that puts them at bit 4 of each byte, and the mask
/// of those bits there.
#[inline(always)]
fn high_bits_at(hb: usize, c: usize) -> (usize, i32, i8) {
    if hb == 1 {
        (0, 4 - c as i32, 0x10)
    } else {
        (c / 4, 4 - 2 * (c % 4) as i32, 0x30)
    }
}

/// The avx2 level's coded kernels (the `avx512` level keeps them too).
pub(super) const AVX2: CodedKernels = crate::kernels::coded_table!(gemm_avx2);

/// The avxvnni level's coded kernels.
pub(super) const AVXVNNI: CodedKernels = crate::kernels::coded_table!(gemm_avxvnni);

/// The avx512vnni level's coded kernels.
pub(super) const VNNI: CodedKernels = crate::kernels::coded_table!(gemm_vnni);

// ---------------------------------------------------------------------------------------
// Scales.

/// A superblock's scale fields as the kernels read them: `S = d · sc[16·slot + i]` and
/// `B = sign · m · mn[16·sub + i]` (or `B = OFF · S`, see [`Coded::OFF`]), where a missing
/// `sc` or `mn` means 1 and `slot` is the sub-block (the half `2·sub + h` if `SPLIT`).
pub(super) struct Raw<'a> {
    d: &'a [u16; GROUP],
    sc: Option<&'a [i8]>,
    /// `B`'s own f16 field and its sign (`None` when `B = OFF · S`).
    m: Option<(&'a [u16; GROUP], f32)>,
    mn: Option<&'a [i8]>,
}

/// How a coded type's `S` and `B` are formed (per type; the kernels are generic over it).
pub(super) trait Coded: CodedX16 {
    /// `B = OFF · S` (Q5_0: −16, Q6_K: −32), added to the integer sums as `OFF · Σx`;
    /// 0 where `B` has a field of its own. (`SPLIT` types have only this kind of `B`.)
    const OFF: i32;

    /// One token (decode) on the avx512vnni level goes to the 256-bit tile (EVEX
    /// `vpdpbusd`, [`tile256`]) instead of the 512-bit one. tg32 on the 1.1B shape, one
    /// thread, Zen 5, in three builds: Q6_K 21–22 → 34–37 t/s (~30 GB/s, llama.cpp's
    /// rate); Q4_K 33 → 22–24, so it stays on 512 bits; Q5_K ~21 either way, but 29 on
    /// 256 bits in one build of identical code placed elsewhere, so unset until that is
    /// understood. The legacy types are unmeasured.
    const DECODE_256: bool = false;

    /// The scale fields; `buf` holds unpacked sub-scales where the type packs them.
    ///
    /// # Safety
    /// The CPU must have avx2.
    unsafe fn raw<'a>(&'a self, buf: &'a mut [i8; 256]) -> Raw<'a>;

    /// The chunks of slot `h` (a 16-column half of the sub-block if `SPLIT`, else all 8).
    #[inline(always)]
    fn chunks(h: usize) -> Range<usize> {
        if Self::SPLIT {
            4 * h..4 * h + 4
        } else {
            0..8
        }
    }

    /// Where slot `h`'s integer sum starts for activations `a`: `OFF · Σx` over the slot.
    #[inline(always)]
    fn start(a: &ActQ8, h: usize) -> i32 {
        Self::OFF
            * if Self::SPLIT {
                a.sums[h] as i32
            } else {
                a.sum()
            }
    }
}

/// The legacy types with a minimum (`d · code + m`), whose superblock is one block.
macro_rules! coded_affine {
    ($($t:ty),*) => {$(
        impl Coded for $t {
            const OFF: i32 = 0;
            #[inline(always)]
            unsafe fn raw<'a>(&'a self, _: &'a mut [i8; 256]) -> Raw<'a> {
                let m = Some((&self.m, 1.0));
                Raw {
                    d: &self.d,
                    sc: None,
                    m,
                    mn: None,
                }
            }
        }
    )*};
}
coded_affine!(BlockQ4_1x16, BlockQ5_1x16);

impl Coded for BlockQ5_0x16 {
    const OFF: i32 = -16;
    #[inline(always)]
    unsafe fn raw<'a>(&'a self, _: &'a mut [i8; 256]) -> Raw<'a> {
        Raw {
            d: &self.d,
            sc: None,
            m: None,
            mn: None,
        }
    }
}

impl Coded for BlockQ6_Kx16 {
    const OFF: i32 = -32;
    const DECODE_256: bool = true;
    #[inline(always)]
    unsafe fn raw<'a>(&'a self, _: &'a mut [i8; 256]) -> Raw<'a> {
        Raw {
            d: &self.d,
            sc: Some(&self.scales[..]),
            m: None,
            mn: None,
        }
    }
}

macro_rules! coded_k4 {
    ($t:ty) => {
        impl Coded for $t {
            const OFF: i32 = 0;
            #[inline(always)]
            unsafe fn raw<'a>(&'a self, buf: &'a mut [i8; 256]) -> Raw<'a> {
                // SAFETY: the caller guarantees avx2.
                unsafe { unpack_k4(&self.scales, buf) };
                let buf: &'a [i8; 256] = buf;
                let (sc, mn) = buf.split_at(128);
                let m = Some((&self.dmin, -1.0));
                Raw {
                    d: &self.d,
                    sc: Some(sc),
                    m,
                    mn: Some(mn),
                }
            }
        }
    };
}
coded_k4!(BlockQ4_Kx16);
coded_k4!(BlockQ5_Kx16);

/// Q4_K's / Q5_K's 12 packed bytes of 16 rows (byte `k` of row `i` at `16k + i`) into the
/// 6-bit scales (`out[16j + i]`) and mins (`out[128 + 16j + i]`) of sub-blocks `j < 8`,
/// as `native::k_scale_min` decodes them: for `j < 4` `q[j] & 63` and `q[j + 4] & 63`,
/// else `q[j + 4] & 15 | (q[j − 4] >> 6) << 4` and `q[j + 4] >> 4 | (q[j] >> 6) << 4`.
/// Two bytes `k`, `k + 1` of all rows are one ymm.
#[inline]
#[target_feature(enable = "avx2")]
fn unpack_k4(p: &[u8; 12 * GROUP], out: &mut [i8; 256]) {
    // SAFETY: `p` is 192 readable bytes: ymm `k < 6` at 32k; unaligned loads.
    let f = |k: usize| unsafe { _mm256_loadu_si256(p.as_ptr().add(32 * k).cast()) };
    let (m3f, m0f, m30) = (
        _mm256_set1_epi8(0x3f),
        _mm256_set1_epi8(0x0f),
        _mm256_set1_epi8(0x30),
    );
    // (x >> 6) << 4 of every byte: its top two bits down to bits 4–5.
    let top = |v: __m256i| _mm256_and_si256(_mm256_srli_epi16::<2>(v), m30);
    for k in 0..2 {
        // Bytes j, j + 4, j + 8 for j = 2k, 2k + 1.
        let (q0, q1, q2) = (f(k), f(2 + k), f(4 + k));
        let sc_lo = _mm256_and_si256(q0, m3f);
        let mn_lo = _mm256_and_si256(q1, m3f);
        let sc_hi = _mm256_or_si256(_mm256_and_si256(q2, m0f), top(q0));
        let mn_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(q2), m0f), top(q1));
        for (o, v) in [(0, sc_lo), (64, sc_hi), (128, mn_lo), (192, mn_hi)] {
            // SAFETY: o + 32k + 32 <= 256 bytes of `out`; unaligned store.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(o + 32 * k).cast(), v) };
        }
    }
}

// ---------------------------------------------------------------------------------------
// AVX-512 VNNI: 16 rows per zmm.

fn gemm_vnni<B: Coded>(w: &[B], x: &[ActQ8], out: &mut [f32]) {
    let dims = group_dims_sub(w.len(), B::SUBS, x.len(), out.len());
    // Tiles of up to 32 tokens: forming a sub-block's code vectors (up to ~30 operations
    // for Q6_K) is shared by more tokens. Against tiles of 8, alternated pp64 medians on
    // the 1.1B shape (Zen 5): 16 tokens gave Q6_K +6% (1 thread) and +9% (2), Q4_K_M +8%,
    // SmolLM2 equal. 32 against 16 (pp128, alternated medians, Zen 5): 1.1B Q6_K +2.4%
    // (1 thread) and +6.0% (2), Q4_K_M +6.5% (2), SmolLM2 Q6_K +5.6% (2).
    // SAFETY: only reachable through the avx512vnni table, installed after detecting
    // avx2, fma, f16c, avx512f/bw/vl and avx512vnni.
    unsafe {
        if B::DECODE_256 && dims.1 == 1 {
            return tile_evex256::<B, Unpack, 1>((w, &[]), x, dims.0, 0, out);
        }
        drive_tokens!(dims, 32, tile_vnni::<B>(w, x, out))
    }
}

/// The 8 code vectors of sub-block `s`: chunk `c` holds codes `4c..4c+4` of the 16 rows.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn codes512<B: CodedX16>(sb: &B, s: usize) -> [__m512i; 8] {
    let nib = sb.sub_nibbles(s);
    // SAFETY: `nib` is 256 readable bytes, chunk c at 64c.
    let v: [__m512i; 4] =
        std::array::from_fn(|c| unsafe { load64(nib.as_ptr().add(64 * c).cast()) });
    let m = _mm512_set1_epi8(0x0f);
    let mut w: [__m512i; 8] = std::array::from_fn(|c| {
        if c < 4 {
            _mm512_and_si512(v[c], m)
        } else {
            _mm512_and_si512(_mm512_srli_epi16::<4>(v[c - 4]), m)
        }
    });
    let hb = B::HIGH_BITS as usize;
    if hb > 0 {
        let high = sb.sub_high(s);
        // SAFETY: `high` is 64·hb readable bytes, plane p at 64p.
        let plane = |p: usize| unsafe { load64(high.as_ptr().add(PLANE * p).cast()) };
        let h = [plane(0), if hb == 2 { plane(1) } else { plane(0) }];
        for (c, wc) in w.iter_mut().enumerate() {
            let (p, n, mask) = high_bits_at(hb, c);
            // w | (h' & mask)
            let mask = _mm512_set1_epi8(mask);
            *wc = _mm512_ternarylogic_epi32::<0xF8>(
                *wc,
                shift_by!(h[p], n, _mm512_slli_epi16, _mm512_srli_epi16),
                mask,
            );
        }
    }
    w
}

/// 16 f16 → f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn f16x16(d: &[u16; GROUP]) -> __m512 {
    // SAFETY: `d` is 32 readable bytes; unaligned load.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(d.as_ptr().cast()) })
}

/// `v · i8[0..16]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn scaled16(v: __m512, q: &[i8]) -> __m512 {
    let q = &q[..16];
    // SAFETY: `q` is 16 readable bytes; unaligned load.
    let q = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
    _mm512_mul_ps(v, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)))
}

/// The 4 activation bytes of chunk `c` (columns `4c..4c+4`) broadcast to every lane.
#[inline(always)]
fn x4(a: &ActQ8, c: usize) -> i32 {
    let q = &a.qs[4 * c..4 * c + 4];
    i32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8])
}

/// `T` tokens × 16 rows, every superblock and sub-block: per token, one `vpdpbusd` chain
/// per 16-column half (independent chains hide its latency), then
/// `facc += cvt(I) · (S·d_x) [+ B · d_x·Σx]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn tile_vnni<B: Coded, const T: usize>(
    w: &[B],
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let mut facc = [_mm512_setzero_ps(); T];
    let mut macc = [_mm512_setzero_ps(); T];
    let mut buf = [0i8; 256];
    for (b, sb) in w.iter().enumerate() {
        // SAFETY: avx2 is enabled here.
        let raw = unsafe { sb.raw(&mut buf) };
        let dv = f16x16(raw.d);
        let mv = raw
            .m
            .map(|(m, sign)| _mm512_mul_ps(f16x16(m), _mm512_set1_ps(sign)));
        for s in 0..B::SUBS {
            prefetch_ahead(sb, s, B::SUBS, T);
            let wv = codes512(sb, s);
            let slots = if B::SPLIT { 2 } else { 1 };
            let sv: [__m512; 2] = std::array::from_fn(|h| match raw.sc {
                Some(sc) if h < slots => scaled16(dv, &sc[16 * (slots * s + h)..]),
                _ => dv,
            });
            // Integer mins as f32 (`B = mv · mn`; see the AVX2 tile for `macc`).
            let mn = raw.mn.map(|mn| {
                let q = &mn[16 * s..16 * s + 16];
                // SAFETY: `q` is 16 readable bytes; unaligned load.
                let q = unsafe { _mm_loadu_si128(q.as_ptr().cast()) };
                _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q))
            });
            for (t, (f, ma)) in facc.iter_mut().zip(macc.iter_mut()).enumerate() {
                let a = &x[(t0 + t) * nb + b * B::SUBS + s];
                let dx = _mm512_set1_ps(a.d);
                let half = |h: usize, start: i32| {
                    let mut p = _mm512_set1_epi32(start);
                    for (c, wc) in wv.iter().enumerate().skip(4 * h).take(4) {
                        p = _mm512_dpbusd_epi32(p, *wc, _mm512_set1_epi32(x4(a, c)));
                    }
                    p
                };
                if B::SPLIT {
                    for (h, s) in sv.iter().enumerate() {
                        let i = half(h, B::OFF * a.sums[h] as i32);
                        *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(*s, dx), *f);
                    }
                } else {
                    let i = _mm512_add_epi32(half(0, B::OFF * a.sum()), half(1, 0));
                    *f = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(sv[0], dx), *f);
                }
                if let Some(mv) = mv {
                    let c = _mm512_set1_ps(a.d * a.sum() as f32);
                    match mn {
                        Some(mn) => *ma = _mm512_fmadd_ps(mn, c, *ma),
                        None => *f = _mm512_fmadd_ps(mv, c, *f),
                    }
                }
            }
        }
        if let (Some(mv), Some(_)) = (mv, raw.mn) {
            for (f, ma) in facc.iter_mut().zip(macc.iter_mut()) {
                *f = _mm512_fmadd_ps(*ma, mv, *f);
                *ma = _mm512_setzero_ps();
            }
        }
    }
    for (t, f) in facc.iter().enumerate() {
        let o = &mut out[(t0 + t) * GROUP..(t0 + t + 1) * GROUP];
        // SAFETY: `o` is 16 writable floats; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *f) };
    }
}

// ---------------------------------------------------------------------------------------
// 256-bit levels (AVX2, AVX-VNNI): two halves of 8 rows (`r`) per superblock, one tile
// skeleton over each level's integer dot product.

/// The body of a 256-bit level's coded entry point for type `B`: `$tile` over all tokens,
/// with the row group's codes preformed when [`preform`] says so (then in tiles of up to
/// `$pre_max` tokens), else formed per 4-token tile. Only expanded in functions that the
/// level's table alone reaches, after its features were detected.
macro_rules! drive256 {
    ($w:expr, $x:expr, $out:expr, $tile:ident, $pre_max:expr) => {{
        let (w, x, out) = ($w, $x, $out);
        let dims = group_dims_sub(w.len(), B::SUBS, x.len(), out.len());
        if preform::<B>(dims.1) {
            // SAFETY: the table holding this entry point is installed only after its
            // level's features (those of `$tile` and `with_preformed`) were detected.
            unsafe {
                with_preformed(w, |pre| {
                    drive_tokens!(dims, $pre_max, $tile::<B, Preformed>((w, pre), x, out))
                })
            }
        } else {
            // SAFETY: as above; `$tile` needs no more than its level's features.
            unsafe { drive_tokens!(dims, 4, $tile::<B, Unpack>((w, &[]), x, out)) }
        }
    }};
}

fn gemm_avx2<B: Coded>(w: &[B], x: &[ActQ8], out: &mut [f32]) {
    // Q6_K (two slots per sub-block) in tiles of 6 tokens when preformed: +7% pp128 at one
    // and two threads on the 1.1B shape (Zen 5, alternated medians); the other types lost
    // 2–7% with 6 and Q6_K gained nothing with 8 (its i16 and i32 sums alone would fill
    // the 16 registers).
    drive256!(w, x, out, tile_avx2, if B::SPLIT { 6 } else { 4 })
}

/// Whether a 256-bit tile over `toks` tokens reads its code vectors from a buffer formed
/// once for the row group ([`with_preformed`]) instead of forming them from the superblock
/// for every 4-token tile ([`code256`]). At 256 bits the tile is bound by its vector
/// operations, and forming a code vector with high bits takes five to seven of them
/// (about a quarter of the `avx2` Q6_K tile's); the 4-bit types form one in two or three,
/// where reading twice their bytes back cost more than it saved. pp128, one thread, Zen 5
/// forced to `avx2` / `avxvnni`, alternated medians against forming per tile: the 1.1B
/// shape's Q6_K +16% / +17% (two threads, `avx2`: +14%), Q4_K_M +2% / +2%, SmolLM2's
/// Q4_K_M (mostly Q5_0) +17% / +35%; with Q4_K preformed too, the 1.1B Q4_K_M lost 5% / 7%.
/// Every integer sum is the one forming per tile gives, so the results are unchanged.
#[inline(always)]
fn preform<B: Coded>(toks: usize) -> bool {
    B::HIGH_BITS > 0 && toks >= 8
}

thread_local! {
    /// [`with_preformed`]'s buffer, kept per thread so a prompt's matrices reuse it.
    static PREFORMED: RefCell<Vec<[u8; 32]>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the code vectors of every superblock of the row group `w`, formed once:
/// superblock `b`, sub-block `s`, rows `8r..8r+8`, chunk `c` at `16·(SUBS·b + s) + 8r + c`.
/// The buffer (16 bytes per column of the group) is this thread's and is reused.
///
/// # Safety
/// The CPU must have avx2, fma and f16c.
unsafe fn with_preformed<B: CodedX16, R>(w: &[B], f: impl FnOnce(&[[u8; 32]]) -> R) -> R {
    PREFORMED.with_borrow_mut(|pre| {
        // SAFETY: the caller guarantees the features.
        unsafe { form_codes(w, pre) };
        f(pre)
    })
}

/// [`with_preformed`]'s buffer filled for the row group `w`.
#[target_feature(enable = "avx2,fma,f16c")]
fn form_codes<B: CodedX16>(w: &[B], pre: &mut Vec<[u8; 32]>) {
    pre.clear();
    pre.reserve(w.len() * B::SUBS * 16);
    for sb in w {
        for s in 0..B::SUBS {
            for r in 0..2 {
                for c in 0..8 {
                    let mut v = [0u8; 32];
                    // SAFETY: `v` is 32 writable bytes; unaligned store.
                    unsafe { _mm256_storeu_si256(v.as_mut_ptr().cast(), code256(sb, s, r, c)) };
                    pre.push(v);
                }
            }
        }
    }
}

/// Where a 256-bit tile takes a chunk's code vector from (see [`preform`]).
trait Codes {
    /// From the buffer of [`with_preformed`]; else formed by [`code256`].
    const PREFORMED: bool;
}

/// Codes formed from the superblock at each use.
struct Unpack;
impl Codes for Unpack {
    const PREFORMED: bool = false;
}

/// Codes read from the row group's preformed buffer.
struct Preformed;
impl Codes for Preformed {
    const PREFORMED: bool = true;
}

/// Chunk `c` of rows `8r..8r+8` of sub-block `sub.s`, from where `C` says.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn code_of<C: Codes, B: CodedX16, const T: usize>(sub: &Sub<B, T>, r: usize, c: usize) -> __m256i {
    if C::PREFORMED {
        debug_assert!(r < 2 && c < 8 && sub.pre.len() == 16);
        // SAFETY: `sub.pre` holds the sub-block's 16 vectors (`tile256`) and r < 2, c < 8
        // at every call; 32 readable bytes, unaligned load.
        unsafe { _mm256_loadu_si256(sub.pre.get_unchecked(8 * r + c).as_ptr().cast()) }
    } else {
        code256(sub.sb, sub.s, r, c)
    }
}

/// Chunk `c` of sub-block `s`, rows `8r..8r+8`: codes `4c..4c+4` of each row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn code256<B: CodedX16>(sb: &B, s: usize, r: usize, c: usize) -> __m256i {
    let nib = sb.sub_nibbles(s);
    // SAFETY: 64(c % 4) + 32r + 32 <= 256 bytes of `nib`; unaligned load.
    let v = unsafe { _mm256_loadu_si256(nib.as_ptr().add(64 * (c % 4) + 32 * r).cast()) };
    let v = if c < 4 { v } else { _mm256_srli_epi16::<4>(v) };
    let mut code = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
    let hb = B::HIGH_BITS as usize;
    if hb > 0 {
        let (p, n, mask) = high_bits_at(hb, c);
        let high = sb.sub_high(s);
        // SAFETY: 64p + 32r + 32 <= 64·hb bytes of `high`; unaligned load.
        let h = unsafe { _mm256_loadu_si256(high.as_ptr().add(PLANE * p + 32 * r).cast()) };
        let h = _mm256_and_si256(
            shift_by!(h, n, _mm256_slli_epi16, _mm256_srli_epi16),
            _mm256_set1_epi8(mask),
        );
        code = _mm256_or_si256(code, h);
    }
    code
}

/// 8 f16 → f32 (rows `8r..8r+8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x8(d: &[u16; GROUP], r: usize) -> __m256 {
    // SAFETY: `d[8r..8r+8]` is 16 readable bytes (r < 2); unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().add(8 * r).cast()) })
}

/// `v · i8[0..8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scaled8(v: __m256, q: &[i8]) -> __m256 {
    let q = &q[..8];
    // SAFETY: `q` is 8 readable bytes; unaligned 64-bit load.
    let q = unsafe { _mm_loadl_epi64(q.as_ptr().cast()) };
    _mm256_mul_ps(v, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)))
}

/// What a 256-bit level's [`Dot256::add_sub`] reads of sub-block `s`: the superblock, its
/// scale fields and its rows' `d` as floats (halves of 8), and the tile's tokens'
/// activation blocks for this sub-block.
struct Sub<'a, B, const T: usize> {
    sb: &'a B,
    raw: &'a Raw<'a>,
    dvs: &'a [__m256; 2],
    xs: &'a [&'a ActQ8; T],
    s: usize,
    /// This sub-block's 16 preformed code vectors (empty when formed at each use).
    pre: &'a [[u8; 32]],
}

// By hand: a derive would require `B: Copy`, and only references are copied.
impl<B, const T: usize> Clone for Sub<'_, B, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B, const T: usize> Copy for Sub<'_, B, T> {}

/// How a 256-bit level turns one sub-block into float sums; the rest of the tile, written
/// once, is [`tile256`].
trait Dot256 {
    /// Row halves (of 8) one pass covers. AVX2 takes one at a time: its i16 pair sums and
    /// their widened totals already hold 2·`T` registers for one half. AVX-VNNI takes both:
    /// each activation broadcast then feeds two `vpdpbusd`, and the 2·`T` chains interleave.
    const HALVES: usize;

    /// Whether [`Dot256::add_sub`] leaves out the rows' `d` for type `B`: its sums are
    /// then `Σ_sub d_x · Σ_slot sc · I` and [`tile256`] multiplies them by `d` once per
    /// superblock.
    fn per_superblock_d<B: Coded>() -> bool;

    /// Sub-block `sub.s` into `acc[t][r]` for each token `t` and the rows `8r..8r+8` of `pass`
    /// (`r = HALVES · pass + j`, `j < HALVES`): every slot's integer sum `I` (starting at
    /// `OFF · Σx`, see the module comment) times `S · d_x`, or `sc · d_x` if
    /// [`Dot256::per_superblock_d`]. The `B` term is [`tile256`]'s.
    ///
    /// # Safety
    /// The CPU must have avx2, fma, f16c and the level's own features.
    unsafe fn add_sub<C: Codes, B: Coded, const T: usize>(
        acc: &mut [[__m256; 2]; T],
        sub: &Sub<B, T>,
        pass: usize,
    );
}

/// AVX2: one `vpmaddubsw` per chunk and token into an i16 sum, widened every
/// `8 >> HIGH_BITS` chunks (see the module comment) by a `vpmaddwd` against the rows'
/// sub-scales instead of ones, so the sub-scales cost no float work: per sub-block and
/// token one convert and one FMA by `d_x`, where the float form took a convert, a
/// multiply and an FMA per slot (two slots for Q6_K) on the same multiplier ports as
/// `vpmaddubsw`. The `OFF · Σx` start becomes one more `vpmaddwd` of the slots'
/// `OFF · sc` against the activations' two 16-column sums. On the 1.1B shape (Zen 5
/// forced to `avx2`, alternated medians): Q6_K pp128 +12–13% at one and two threads,
/// tg32 +11%; Q4_K_M pp128 +3%, tg32 +17%; SmolLM2 Q4_K_M (mostly Q5_0, kept in floats)
/// within the noise.
struct Maddubs;

impl Dot256 for Maddubs {
    const HALVES: usize = 1;
    /// For the K-quants; a legacy type's superblock is one sub-block, where `d · d_x` per
    /// token costs what `d` per superblock would.
    #[inline(always)]
    fn per_superblock_d<B: Coded>() -> bool {
        B::SUBS > 1
    }
    /// # Safety
    /// As [`Dot256::add_sub`]: the CPU must have this level's features.
    #[inline(always)]
    unsafe fn add_sub<C: Codes, B: Coded, const T: usize>(
        acc: &mut [[__m256; 2]; T],
        sub: &Sub<B, T>,
        pass: usize,
    ) {
        // SAFETY: the caller guarantees avx2, fma and f16c.
        unsafe { add_sub_maddubs::<C, B, T>(acc, sub, pass) }
    }
}

/// Integers of this sum, for Q6_K (the widest case): pair sums ≤ 2·63·127, two chunks per
/// i16 group (≤ 32004 < 2¹⁵); each `vpmaddwd` by sub-scales |sc| ≤ 128 gives ≤ 8.2·10⁶,
/// four per sub-block and half ≤ 3.3·10⁷, and the start |32 · (sc₀Σx₀ + sc₁Σx₁)| ≤ 1.7·10⁷:
/// far inside i32. (Q4_K, Q5_K: sub-scales ≤ 63 and one or two groups per sub-block.)
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn add_sub_maddubs<C: Codes, B: Coded, const T: usize>(
    acc: &mut [[__m256; 2]; T],
    sub: &Sub<B, T>,
    r: usize,
) {
    let Sub {
        raw, dvs, xs, s, ..
    } = *sub;
    let slots = if B::SPLIT { 2 } else { 1 };
    // Each row's sub-scale of slot h in both i16 halves of its lane.
    let sc16: [__m256i; 2] = std::array::from_fn(|h| match raw.sc {
        Some(sc) if h < slots => {
            let q = &sc[16 * (slots * s + h) + 8 * r..][..8];
            // SAFETY: `q` is 8 readable bytes; unaligned 64-bit load.
            let v = _mm256_cvtepi8_epi32(unsafe { _mm_loadl_epi64(q.as_ptr().cast()) });
            _mm256_blend_epi16::<0xAA>(v, _mm256_slli_epi32::<16>(v))
        }
        _ => _mm256_set1_epi16(1),
    });
    let mut isum: [__m256i; T] = if B::OFF == 0 {
        [_mm256_setzero_si256(); T]
    } else if raw.sc.is_none() {
        // No sub-scales (Q5_0): the plain `OFF · Σx`, formed as a scalar.
        std::array::from_fn(|t| _mm256_set1_epi32(B::start(xs[t], 0)))
    } else {
        // Lanes (OFF·sc₀, OFF·sc₁) against (Σx₀, Σx₁); without SPLIT both are the one slot's.
        let off = _mm256_mullo_epi16(
            _mm256_blend_epi16::<0xAA>(sc16[0], sc16[slots - 1]),
            _mm256_set1_epi16(B::OFF as i16),
        );
        std::array::from_fn(|t| _mm256_madd_epi16(off, _mm256_set1_epi32(xs[t].sum_pair())))
    };
    let group = 8 >> B::HIGH_BITS;
    let mut acc16 = [_mm256_setzero_si256(); T];
    for (h, sch) in sc16.iter().enumerate().take(slots) {
        for c in B::chunks(h) {
            let code = code_of::<C, B, T>(sub, r, c);
            for (a, xt) in acc16.iter_mut().zip(xs) {
                let p = _mm256_maddubs_epi16(code, _mm256_set1_epi32(x4(xt, c)));
                *a = _mm256_add_epi16(*a, p);
            }
            // A slot's chunk count is a multiple of the group, so nothing is left in `acc16`.
            if (c + 1) % group == 0 {
                for (i, a) in isum.iter_mut().zip(acc16.iter_mut()) {
                    *i = _mm256_add_epi32(*i, _mm256_madd_epi16(*a, *sch));
                    *a = _mm256_setzero_si256();
                }
            }
        }
    }
    for ((f, i), xt) in acc.iter_mut().zip(isum).zip(xs) {
        let dx = _mm256_set1_ps(xt.d);
        let scale = if Maddubs::per_superblock_d::<B>() {
            dx
        } else {
            _mm256_mul_ps(dvs[r], dx)
        };
        f[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), scale, f[r]);
    }
}

/// AVX-VNNI: 256-bit `vpdpbusd`, both halves of 8 rows in one pass: each chunk's two code
/// vectors (rows `0..8`, `8..16`) are formed once and each activation broadcast feeds both.
struct Vnni256<const EVEX: bool>;

impl<const EVEX: bool> Dot256 for Vnni256<EVEX> {
    const HALVES: usize = 2;
    #[inline(always)]
    fn per_superblock_d<B: Coded>() -> bool {
        false
    }
    /// # Safety
    /// As [`Dot256::add_sub`]: the CPU must have this level's features.
    #[inline(always)]
    unsafe fn add_sub<C: Codes, B: Coded, const T: usize>(
        acc: &mut [[__m256; 2]; T],
        sub: &Sub<B, T>,
        _pass: usize,
    ) {
        // Called once per slot rather than in a loop, which LLVM leaves rolled: the tile
        // then keeps its sums on the stack (Q6_K pp128 −13%, Zen 5).
        // SAFETY: the caller guarantees the features.
        unsafe {
            add_slot::<EVEX, C, B, T>(acc, sub, 0);
            if B::SPLIT {
                add_slot::<EVEX, C, B, T>(acc, sub, 1);
            }
        }
    }
}

/// Slot `h` of sub-block `s` into the float accumulators of both row halves:
/// `acc[t][r] += cvt(I) · (S·d_x)`, with 256-bit `vpdpbusd` forming `I`.
///
/// # Safety
/// As [`Vnni256::add_sub`], of which it is a part.
#[inline(always)]
unsafe fn add_slot<const EVEX: bool, C: Codes, B: Coded, const T: usize>(
    acc: &mut [[__m256; 2]; T],
    sub: &Sub<B, T>,
    h: usize,
) {
    // SAFETY: the caller guarantees avx2, fma, f16c and, for the encoding, avxvnni or
    // avx512f/bw/vl + avx512vnni.
    let isum = unsafe {
        if EVEX {
            sums_evex256::<C, B, T>(sub, h)
        } else {
            sums_avxvnni::<C, B, T>(sub, h)
        }
    };
    let slot = if B::SPLIT { 2 * sub.s + h } else { sub.s };
    for r in 0..2 {
        let sv = match sub.raw.sc {
            // SAFETY: as above.
            Some(sc) => unsafe { scaled8(sub.dvs[r], &sc[16 * slot + 8 * r..]) },
            None => sub.dvs[r],
        };
        for (t, i) in isum.iter().enumerate() {
            // SAFETY: as above.
            unsafe {
                let d = _mm256_mul_ps(sv, _mm256_set1_ps(sub.xs[t].d));
                acc[t][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i[r]), d, acc[t][r]);
            }
        }
    }
}

/// [`Vnni256`]'s sums, once per encoding of the 256-bit `vpdpbusd`: VEX (AVX-VNNI) and
/// EVEX (AVX-512 VL + VNNI).
macro_rules! sums_vnni256 {
    ($name:ident, $features:literal, $dpbusd:ident) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name<C: Codes, B: Coded, const T: usize>(
            sub: &Sub<B, T>,
            h: usize,
        ) -> [[__m256i; 2]; T] {
            let xs = sub.xs;
            let mut acc: [[__m256i; 2]; T] =
                std::array::from_fn(|t| [_mm256_set1_epi32(B::start(xs[t], h)); 2]);
            for c in B::chunks(h) {
                let code = [code_of::<C, B, T>(sub, 0, c), code_of::<C, B, T>(sub, 1, c)];
                for (a, xt) in acc.iter_mut().zip(xs) {
                    let bx = _mm256_set1_epi32(x4(xt, c));
                    for (ar, cr) in a.iter_mut().zip(code) {
                        *ar = $dpbusd(*ar, cr, bx);
                    }
                }
            }
            acc
        }
    };
}
sums_vnni256!(
    sums_avxvnni,
    "avx2,fma,f16c,avxvnni",
    _mm256_dpbusd_avx_epi32
);
sums_vnni256!(
    sums_evex256,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    _mm256_dpbusd_epi32
);

/// `T` tokens × 16 rows as two halves of 8 (`r`), every superblock and sub-block: `K`
/// adds each sub-block's scaled integer sums ([`Dot256::add_sub`]), then the `B` term, as
/// in the VNNI tile.
///
/// # Safety
/// The CPU must have avx2, fma, f16c and `K`'s features. Called from a `#[target_feature]`
/// function that enables them (below), into which it and `K`'s code inline.
#[inline(always)]
unsafe fn tile256<K: Dot256, C: Codes, B: Coded, const T: usize>(
    (w, pre): (&[B], &[[u8; 32]]),
    x: &[ActQ8],
    nb: usize,
    t0: usize,
    out: &mut [f32],
) {
    let mut facc = [[_mm256_setzero_ps(); 2]; T];
    let mut macc = [[_mm256_setzero_ps(); 2]; T];
    // The superblock's sums before `d` ([`Dot256::per_superblock_d`]).
    let mut sacc = [[_mm256_setzero_ps(); 2]; T];
    let mut buf = [0i8; 256];
    for (b, sb) in w.iter().enumerate() {
        // SAFETY: the caller guarantees avx2.
        let raw = unsafe { sb.raw(&mut buf) };
        // Converted once per superblock.
        // SAFETY (this and every feature-gated call below): the caller guarantees the features.
        let dvs = unsafe { [f16x8(raw.d, 0), f16x8(raw.d, 1)] };
        let mvs = raw.m.map(|(m, sign)| {
            // SAFETY: as above.
            unsafe {
                let sign = _mm256_set1_ps(sign);
                [0, 1].map(|r| _mm256_mul_ps(f16x8(m, r), sign))
            }
        });
        for s in 0..B::SUBS {
            if C::PREFORMED {
                // The codes come from the buffer: what is read next from the weights is
                // the next row group's (by `form_codes`, after this group's tiles), so
                // fetch that, one group ahead. `form_codes`' share of a Q6_K prompt went
                // from 4.4% to 2.3% (pp128 +3%, 1.1B shape, `avx2`, Zen 5).
                prefetch_at(sb, s, B::SUBS, std::mem::size_of_val(w));
            } else {
                prefetch_ahead(sb, s, B::SUBS, T);
            }
            // What the activations bring to every row, formed once per sub-block as
            // scalars (each use is then one broadcast from memory, and no vector register
            // is held across passes): each slot's integer sum starts at `OFF · Σx`, then
            // `d_x` and, with a `B` field, `d_x · Σx`.
            let xs: [&ActQ8; T] = std::array::from_fn(|t| &x[(t0 + t) * nb + b * B::SUBS + s]);
            let dsum: [f32; T] = std::array::from_fn(|t| xs[t].d * xs[t].sum() as f32);
            for pass in 0..2 / K::HALVES {
                // Left to itself, LLVM keeps all 2·T float accumulators in registers and
                // spills the integer ones inside the chunk loop (as in `rows16`'s Q4_0
                // tile); `black_box` only hides the array from the optimizer. With the
                // activations' terms formed once per sub-block: Q6_K pp128 +12% on the
                // 1.1B shape (Zen 4, avx2, alternated medians), Q4_K_M within the noise.
                let acc = if K::per_superblock_d::<B>() {
                    &mut sacc
                } else {
                    &mut facc
                };
                std::hint::black_box(&mut *acc);
                let sub = Sub {
                    sb,
                    raw: &raw,
                    dvs: &dvs,
                    xs: &xs,
                    s,
                    pre: if C::PREFORMED {
                        &pre[16 * (B::SUBS * b + s)..][..16]
                    } else {
                        &[]
                    },
                };
                // SAFETY: as above.
                unsafe { K::add_sub::<C, B, T>(acc, &sub, pass) };
                // B · d_x·Σx: with integer mins, Σ_s mn_s · d_x·Σx goes to `macc` (a chain of
                // its own) and is scaled by the field once per superblock.
                if let Some(mvs) = mvs {
                    for r in K::HALVES * pass..K::HALVES * (pass + 1) {
                        // SAFETY: as above; `mn[16s + 8r..][..8]` is 8 readable bytes
                        // (unaligned 64-bit load).
                        unsafe {
                            let mn = raw.mn.map(|mn| {
                                let q = &mn[16 * s + 8 * r..16 * s + 8 * r + 8];
                                let q = _mm_loadl_epi64(q.as_ptr().cast());
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))
                            });
                            for (t, &c) in dsum.iter().enumerate() {
                                let c = _mm256_set1_ps(c);
                                match mn {
                                    Some(mn) => macc[t][r] = _mm256_fmadd_ps(mn, c, macc[t][r]),
                                    None => facc[t][r] = _mm256_fmadd_ps(mvs[r], c, facc[t][r]),
                                }
                            }
                        }
                    }
                }
            }
        }
        if K::per_superblock_d::<B>() {
            for (f, a) in facc.iter_mut().zip(sacc.iter_mut()) {
                for r in 0..2 {
                    // SAFETY: as above.
                    unsafe {
                        f[r] = _mm256_fmadd_ps(a[r], dvs[r], f[r]);
                        a[r] = _mm256_setzero_ps();
                    }
                }
            }
        }
        if let (Some(mvs), Some(_)) = (mvs, raw.mn) {
            for (f, m) in facc.iter_mut().zip(macc.iter_mut()) {
                for r in 0..2 {
                    // SAFETY: as above.
                    unsafe {
                        f[r] = _mm256_fmadd_ps(m[r], mvs[r], f[r]);
                        m[r] = _mm256_setzero_ps();
                    }
                }
            }
        }
    }
    for (t, f) in facc.iter().enumerate() {
        let o = &mut out[(t0 + t) * GROUP..(t0 + t + 1) * GROUP];
        // SAFETY: `o` is 16 writable floats; unaligned stores of 8 + 8 (avx: the caller).
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), f[0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), f[1]);
        }
    }
}

/// The `#[target_feature]` entry points of [`tile256`], one per level's [`Dot256`]: each
/// enables exactly what that level's code needs, so the skeleton inlines into it.
macro_rules! tile256_entry {
    ($name:ident, $features:literal, $dot:ty) => {
        #[inline]
        #[target_feature(enable = $features)]
        fn $name<B: Coded, C: Codes, const T: usize>(
            w: (&[B], &[[u8; 32]]),
            x: &[ActQ8],
            nb: usize,
            t0: usize,
            out: &mut [f32],
        ) {
            // SAFETY: every feature `tile256` and this `Dot256` need is enabled here.
            unsafe { tile256::<$dot, C, B, T>(w, x, nb, t0, out) }
        }
    };
}
tile256_entry!(tile_avx2, "avx2,fma,f16c", Maddubs);
tile256_entry!(tile_avxvnni, "avx2,fma,f16c,avxvnni", Vnni256<false>);
tile256_entry!(
    tile_evex256,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    Vnni256<true>
);

// ---------------------------------------------------------------------------------------
// AVX-VNNI: 256-bit `vpdpbusd`, both halves of 8 rows in one pass.

fn gemm_avxvnni<B: Coded>(w: &[B], x: &[ActQ8], out: &mut [f32]) {
    drive256!(w, x, out, tile_avxvnni, 4)
}
