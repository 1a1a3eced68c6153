//! x86-64 kernel levels: AVX2 (+FMA, F16C), AVX-VNNI (AVX2 + 256-bit VNNI), AVX-512
//! (F/BW/VL) and AVX-512 VNNI.

/// Runs `$tile::<$G.., T>(w, x, nb, t0, out)` over all tokens: tiles of 32 (if `$max` is
/// 32), 16 (if `$max` ≥ 16), 8 (if `$max` ≥ 8), 6 (if `$max` is 6), then 4, 2, 1. `$dims`
/// is `(nb, toks)`: activation blocks per token and token count. `$max` is a constant.
macro_rules! drive_tokens {
    ($dims:expr, $max:expr, $tile:ident $(::<$($g:ty),+>)? ($w:expr, $x:expr, $out:expr)) => {{
        let (nb, toks) = $dims;
        let mut t = 0;
        if $max >= 32 {
            while t + 32 <= toks {
                $tile::<$($($g,)+)? 32>($w, $x, nb, t, $out);
                t += 32;
            }
        }
        if $max >= 16 {
            while t + 16 <= toks {
                $tile::<$($($g,)+)? 16>($w, $x, nb, t, $out);
                t += 16;
            }
        }
        if $max >= 8 {
            while t + 8 <= toks {
                $tile::<$($($g,)+)? 8>($w, $x, nb, t, $out);
                t += 8;
            }
        }
        if $max == 6 {
            while t + 6 <= toks {
                $tile::<$($($g,)+)? 6>($w, $x, nb, t, $out);
                t += 6;
            }
        }
        while t + 4 <= toks {
            $tile::<$($($g,)+)? 4>($w, $x, nb, t, $out);
            t += 4;
        }
        while t + 2 <= toks {
            $tile::<$($($g,)+)? 2>($w, $x, nb, t, $out);
            t += 2;
        }
        while t < toks {
            $tile::<$($($g,)+)? 1>($w, $x, nb, t, $out);
            t += 1;
        }
    }};
}

/// How far ahead of the weights in work a prompt tile (two tokens or more) prefetches, in
/// bytes. A tile of 16 tokens spends ~8 cycles of `vpdpbusd` per 64 weight bytes and token,
/// so it takes its row group's weights slowly, and with the hardware prefetcher alone the
/// first token tile over each row group waited on memory. On the 1.1B shape (Zen 5,
/// avx512vnni, one thread, alternated medians) this prefetch took pp16 from 124 to 204 t/s
/// (Q8_0), 146 → 267 (Q4_0), 131 → 241 (Q6_K) and 142 → 239 (Q4_K_M); pp128 +6–9%, two
/// threads +8% (Q4_0), the `avx2` tiles +3–13%. 3200–6720 bytes ahead measured alike.
pub(super) const PROMPT_PREFETCH: usize = 4096;

/// The same for one token (decode), which streams each weight once. The hardware
/// prefetchers alone left it at 20–25 GB/s on the Zen 5, and its speed moved by up to 1.4×
/// with nothing but the code's address between builds (notes of 2026-12-04). With this
/// prefetch, tg32 on the 1.1B shape, one thread, alternated medians against the build
/// before: Q4_K_M 34 → 58 t/s, Q6_K 34 → 40, Q8_0 29.5 → 31.3; in one build reading the
/// distance at run time, 2 and 4 KiB ahead gained less, 16 KiB as much, and the forced
/// `avx2` and `avxvnni` tiles gained 23–120%. (On the AVX2-only Zen 4 of 2026-12-03 an
/// earlier prefetch of the two-stream format-1.2 layout, 4 KiB ahead, measured slower
/// than none; this one has not run there yet.)
pub(super) const DECODE_PREFETCH: usize = 8192;

/// Prefetch part `part` of `parts` of the bytes of one `B` that lie [`PROMPT_PREFETCH`]
/// (or, for one token, [`DECODE_PREFETCH`]) bytes past `b` into L1 (a tile with `parts`
/// steps per `B` calls it at each step, so the whole weight stream ahead of it is requested
/// once).
#[inline(always)]
pub(super) fn prefetch_ahead<B>(b: &B, part: usize, parts: usize, tokens: usize) {
    let ahead = if tokens > 1 {
        PROMPT_PREFETCH
    } else {
        DECODE_PREFETCH
    };
    prefetch_at(b, part, parts, ahead);
}

/// As [`prefetch_ahead`], `ahead` bytes past `b`.
#[inline(always)]
pub(super) fn prefetch_at<B>(b: &B, part: usize, parts: usize, ahead: usize) {
    let base = (b as *const B).cast::<u8>().wrapping_add(ahead);
    let lines = std::mem::size_of::<B>().div_ceil(64);
    let per = lines.div_ceil(parts);
    for l in part * per..((part + 1) * per).min(lines) {
        // SAFETY: a prefetch is a hint that never faults, whatever the address (past the
        // end of the weights it fetches a line that is not used); `wrapping_add` keeps
        // the pointer arithmetic defined.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                base.wrapping_add(64 * l).cast(),
            )
        };
    }
}

mod activation;
mod avx2;
mod avx512;
mod coded;
mod rows16;

use super::Kernels;

/// Append the levels this CPU can run, in increasing order of preference.
pub(super) fn push_available(v: &mut Vec<&'static Kernels>) {
    use std::arch::is_x86_feature_detected as d;
    let avx2 = d!("avx2") && d!("fma") && d!("f16c");
    if !avx2 {
        return;
    }
    v.push(&avx2::KERNELS);
    if d!("avxvnni") {
        v.push(&avx2::KERNELS_AVXVNNI);
    }
    let avx512 = d!("avx512f") && d!("avx512bw") && d!("avx512vl");
    if !avx512 {
        return;
    }
    v.push(&avx512::KERNELS);
    if d!("avx512vnni") {
        v.push(&avx512::KERNELS_VNNI);
    }
}
