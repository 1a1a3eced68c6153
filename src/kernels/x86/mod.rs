//! x86-64 kernel levels: AVX2 (+FMA, F16C), AVX-VNNI (AVX2 + 256-bit VNNI), AVX-512
//! (F/BW/VL) and AVX-512 VNNI.

/// Runs `$tile::<$G.., T>(w, x, nb, t0, out)` over all tokens: tiles of 16 (if `$max` is
/// 16), 8 (if `$max` ≥ 8), then 4, 2, 1. `$dims` is `(nb, toks)`: activation blocks per
/// token and token count.
macro_rules! drive_tokens {
    ($dims:expr, $max:literal, $tile:ident $(::<$($g:ty),+>)? ($w:expr, $x:expr, $out:expr)) => {{
        let (nb, toks) = $dims;
        let mut t = 0;
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
