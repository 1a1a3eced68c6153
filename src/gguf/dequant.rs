//! Reference (scalar, unoptimized) dequantization of ggml tensor data to f32.
//!
//! Block layouts follow ggml's `ggml-common.h`; the arithmetic mirrors
//! ggml's reference `dequantize_row_*` functions operation by operation (no
//! fused multiply-add), so results are bit-identical to ggml's and to the
//! `gguf` Python package's `gguf.quants.dequantize`.

use half::{bf16, f16};

use super::error::GgufError;
use super::types::{GgmlType, QK_K};

/// Dequantize `data` (a whole number of `ty` blocks) into `out`, which must
/// hold exactly `data.len() / ty.type_size() * ty.block_size()` values.
///
/// Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
/// Q4_K, Q5_K, Q6_K.
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), GgufError> {
    let err = |msg: String| GgufError::Dequant { ty: ty.name(), msg };
    let ts = ty.type_size();
    let bs = ty.block_size();
    if !data.len().is_multiple_of(ts) {
        return Err(err(format!(
            "input length {} is not a multiple of the block size {ts} bytes",
            data.len()
        )));
    }
    let n_blocks = data.len() / ts;
    if n_blocks.checked_mul(bs) != Some(out.len()) {
        return Err(err(format!(
            "{n_blocks} blocks hold {} values but the output has room for {}",
            n_blocks.saturating_mul(bs),
            out.len()
        )));
    }
    // The float types element by element inline (a call per element through `block_fn`
    // was a tenth of converting an F32 checkpoint).
    match ty {
        GgmlType::F32 => {
            for (b, y) in data.chunks_exact(4).zip(out.iter_mut()) {
                *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            return Ok(());
        }
        GgmlType::F16 => {
            if data.as_ptr().align_offset(std::mem::align_of::<f16>()) == 0 {
                // Aligned (GGUF tensors are): half's slice conversion uses F16C or NEON.
                use half::slice::HalfFloatSliceExt;
                crate::quant::blocks::<f16>(data).convert_to_f32_slice(out);
            } else {
                for (b, y) in data.chunks_exact(2).zip(out.iter_mut()) {
                    *y = f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32_const();
                }
            }
            return Ok(());
        }
        _ => {}
    }
    let block_fn: fn(&[u8], &mut [f32]) = match ty {
        GgmlType::BF16 => |b, y| y[0] = bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32(),
        GgmlType::Q4_0 => block_q4_0,
        GgmlType::Q4_1 => block_q4_1,
        GgmlType::Q5_0 => block_q5_0,
        GgmlType::Q5_1 => block_q5_1,
        GgmlType::Q8_0 => block_q8_0,
        GgmlType::Q2_K => block_q2_k,
        GgmlType::Q3_K => block_q3_k,
        GgmlType::Q4_K => block_q4_k,
        GgmlType::Q5_K => block_q5_k,
        GgmlType::Q6_K => block_q6_k,
        _ => return Err(err("dequantization of this type is not implemented".into())),
    };
    for (block, y) in data.chunks_exact(ts).zip(out.chunks_exact_mut(bs)) {
        block_fn(block, y);
    }
    Ok(())
}

/// Little-endian f16 at byte `at`, widened to f32 (exact).
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[at], b[at + 1]])).to_f32()
}

/// block_q4_0 { half d; u8 qs[16] }: y[j] = d * (lo_nibble(qs[j]) - 8),
/// y[j + 16] = d * (hi_nibble(qs[j]) - 8).
fn block_q4_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// block_q4_1 { half d; half m; u8 qs[16] }: y = d * q + m.
fn block_q4_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// block_q5_0 { half d; u8 qh[4]; u8 qs[16] }: 5-bit q = nibble | (bit of qh)
/// << 4, y = d * (q - 16).
fn block_q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        let q0 = (qs[j] & 0x0F) | (h0 << 4);
        let q1 = (qs[j] >> 4) | (h1 << 4);
        y[j] = (q0 as i32 - 16) as f32 * d;
        y[j + 16] = (q1 as i32 - 16) as f32 * d;
    }
}

/// block_q5_1 { half d; half m; u8 qh[4]; u8 qs[16] }: y = d * q + m.
fn block_q5_1(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) & 1) as u8;
        let h1 = ((qh >> (j + 16)) & 1) as u8;
        let q0 = (qs[j] & 0x0F) | (h0 << 4);
        let q1 = (qs[j] >> 4) | (h1 << 4);
        y[j] = q0 as f32 * d + m;
        y[j + 16] = q1 as f32 * d + m;
    }
}

/// block_q8_0 { half d; i8 qs[32] }: y = d * q.
fn block_q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for j in 0..32 {
        y[j] = (b[2 + j] as i8) as f32 * d;
    }
}

/// block_q2_K { u8 scales[16]; u8 qs[64]; half d; half dmin }.
/// 16 sub-blocks of 16: scale = d * (scales[i] & 0xF), min = dmin *
/// (scales[i] >> 4); 2-bit quants, y = scale * q - min.
/// Value index = 128 * half + 32 * shift_pair + l, from qs[32 * half + l]
/// >> (2 * shift_pair).
fn block_q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let d = f16_at(b, 80);
    let dmin = f16_at(b, 82);
    for (i, yi) in y.iter_mut().enumerate().take(QK_K) {
        let half = i / 128;
        let shift = 2 * ((i % 128) / 32);
        let l = i % 32;
        let q = (qs[32 * half + l] >> shift) & 3;
        let sc = scales[i / 16];
        let dl = d * (sc & 0x0F) as f32;
        let ml = dmin * (sc >> 4) as f32;
        *yi = dl * q as f32 - ml;
    }
}

/// The 16 signed 6-bit scales of a Q3_K block, unpacked from 12 bytes:
/// low 4 bits from bytes 0..8 (low nibble for scales 0..8, high nibble for
/// 8..16), high 2 bits from bytes 8..12 (byte 8 + i % 4, bits 2 * (i / 4)).
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 {
            packed[i] & 0x0F
        } else {
            packed[i - 8] >> 4
        };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// block_q3_K { u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d }.
/// 16 sub-blocks of 16 with scale d * (s - 32); q = 2 low bits from qs (as in
/// Q2_K) minus 4 when the hmask bit is *clear*; the hmask bit for value
/// index i is bit (i / 32) of hmask[i % 32].
fn block_q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    for (i, yi) in y.iter_mut().enumerate().take(QK_K) {
        let half = i / 128;
        let shift = 2 * ((i % 128) / 32);
        let l = i % 32;
        let low = ((qs[32 * half + l] >> shift) & 3) as i8;
        let high_set = (hmask[l] >> (i / 32)) & 1 != 0;
        let q = low - if high_set { 0 } else { 4 };
        let dl = d * scales[i / 16] as f32;
        *yi = dl * q as f32;
    }
}

/// Scale and min (6 bits each) of sub-block `j` (0..8) of a Q4_K/Q5_K block,
/// from the 12 packed bytes (ggml's `get_scale_min_k4`).
fn k4_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q4_K { half d; half dmin; u8 scales[12]; u8 qs[128] }.
/// 8 sub-blocks of 32; sub-block j uses nibble (j % 2) of qs[32 * (j / 2)
/// ..][..32]; y = d * sc * q - dmin * m.
fn block_q4_k(b: &[u8], y: &mut [f32]) {
    k_scale_min(b, &b[16..144], None, y)
}

/// block_q5_K { half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128] }.
/// As Q4_K, with a fifth bit: bit j of qh[l] for value l of sub-block j.
fn block_q5_k(b: &[u8], y: &mut [f32]) {
    k_scale_min(b, &b[48..176], Some(&b[16..48]), y)
}

/// The Q4_K / Q5_K body: `d`, `dmin` and the packed scales at the block's start, the low
/// nibbles `qs`, and for Q5_K the fifth bits `qh`.
fn k_scale_min(b: &[u8], qs: &[u8], qh: Option<&[u8]>, y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    for j in 0..8 {
        let (sc, m) = k4_scale_min(j, scales);
        let d1 = d * sc as f32;
        let m1 = dmin * m as f32;
        let shift = 4 * (j % 2);
        let q = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        for l in 0..32 {
            let high = qh.map_or(0, |qh| ((qh[l] >> j) & 1) << 4);
            let v = ((q[l] >> shift) & 0x0F) | high;
            y[32 * j + l] = d1 * v as f32 - m1;
        }
    }
}

/// block_q6_K { u8 ql[128]; u8 qh[64]; i8 scales[16]; half d }.
/// Per half h (128 values) and l in 0..32, the four values at 128h + l +
/// {0, 32, 64, 96} take low 4 bits from ql[64h + l] lo, ql[64h + l + 32] lo,
/// ql[64h + l] hi, ql[64h + l + 32] hi, and high 2 bits from bits {0-1, 2-3,
/// 4-5, 6-7} of qh[32h + l]; y = d * scales[i / 16] * (q - 32).
fn block_q6_k(b: &[u8], y: &mut [f32]) {
    let ql = &b[0..128];
    let qh = &b[128..192];
    let scales = &b[192..208];
    let d = f16_at(b, 208);
    for (i, yi) in y.iter_mut().enumerate().take(QK_K) {
        let h = i / 128;
        let part = (i % 128) / 32;
        let l = i % 32;
        let low_byte = ql[64 * h + l + 32 * (part % 2)];
        let low = if part < 2 {
            low_byte & 0x0F
        } else {
            low_byte >> 4
        };
        let high = (qh[32 * h + l] >> (2 * part)) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        let sc = scales[i / 16] as i8;
        *yi = d * sc as f32 * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16_bytes(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn q8_0_hand_block() {
        // d = 0.5, qs = -16..16
        let mut b = Vec::new();
        b.extend_from_slice(&f16_bytes(0.5));
        for q in -16i8..16 {
            b.push(q as u8);
        }
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q8_0, &b, &mut y).unwrap();
        for (j, &v) in y.iter().enumerate() {
            assert_eq!(v, (j as f32 - 16.0) * 0.5);
        }
        assert_eq!(y[0], -8.0);
        assert_eq!(y[31], 7.5);
    }

    #[test]
    fn q4_0_hand_block() {
        // d = 2.0; byte j = lo nibble j % 16, hi nibble 15 - j % 16.
        let mut b = Vec::new();
        b.extend_from_slice(&f16_bytes(2.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut y = [0f32; 32];
        dequantize(GgmlType::Q4_0, &b, &mut y).unwrap();
        // First 16 values from low nibbles: (j - 8) * 2.
        assert_eq!(y[0], -16.0);
        assert_eq!(y[8], 0.0);
        assert_eq!(y[15], 14.0);
        // Last 16 from high nibbles: (15 - j - 8) * 2.
        assert_eq!(y[16], 14.0);
        assert_eq!(y[31], -16.0);
        for j in 0..16 {
            assert_eq!(y[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(y[j + 16], (7.0 - j as f32) * 2.0);
        }
    }

    #[test]
    fn length_checks() {
        let mut y = [0f32; 32];
        let e = dequantize(GgmlType::Q8_0, &[0u8; 33], &mut y).unwrap_err();
        assert!(e.to_string().contains("not a multiple"), "{e}");
        let e = dequantize(GgmlType::Q8_0, &[0u8; 68], &mut y).unwrap_err();
        assert!(e.to_string().contains("room for 32"), "{e}");
        let e = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut [0f32; 256]).unwrap_err();
        assert!(e.to_string().contains("not implemented"), "{e}");
        dequantize(GgmlType::Q4_K, &[], &mut []).unwrap();
    }

    /// F16 data converts the same whether or not it is 2-byte aligned (the aligned path
    /// uses half's vectorised slice conversion, the other one element at a time).
    #[test]
    fn f16_aligned_and_unaligned_agree() {
        let vals: Vec<f16> = (0..1031u32)
            .map(|i| f16::from_bits((i.wrapping_mul(40503) % 65536) as u16))
            .collect();
        let mut buf = vec![0u8; vals.len() * 2 + 2];
        for off in [0usize, 1] {
            for (i, v) in vals.iter().enumerate() {
                buf[off + 2 * i..off + 2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
            let data = &buf[off..off + vals.len() * 2];
            let mut out = vec![0.0f32; vals.len()];
            dequantize(GgmlType::F16, data, &mut out).unwrap();
            for (o, v) in out.iter().zip(&vals) {
                let want = v.to_f32();
                assert!(o.to_bits() == want.to_bits() || (o.is_nan() && want.is_nan()));
            }
        }
    }
}
