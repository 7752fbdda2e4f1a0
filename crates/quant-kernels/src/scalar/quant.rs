//! Reference quantizers: bit-identical to ggml's `quantize_row_*_ref`.

use crate::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8K};
use crate::fp16::f32_to_f16;
use crate::types::{QK_K, QK8_0};

/// C's `MAX(a, b)` (`a > b ? a : b`), kept literally so NaN propagates exactly as in ggml.
#[inline(always)]
fn c_max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the 1.5 * 2^23 trick.
/// Valid for `|x| <= 4194303`, which every caller guarantees by construction.
#[inline(always)]
pub(crate) fn nearest_int(x: f32) -> i32 {
    let val = x + 12_582_912.0;
    ((val.to_bits() & 0x007f_ffff) as i32) - 0x0040_0000
}

/// The scale and inverse scale ggml's Q8_0/Q8_1 reference quantizers use for one block.
#[inline(always)]
pub(crate) fn q8_0_scale(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in x {
        amax = c_max(amax, v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// `quantize_row_q8_0_ref`. `x.len()` must be `32 * y.len()`.
pub fn quant_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * QK8_0);
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, id) = q8_0_scale(xb);
        yb.d = f32_to_f16(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            // `roundf` then the implicit float -> int8_t conversion; in range by construction.
            *q = (v * id).round() as i8;
        }
    }
}

/// `quantize_row_q8_1_ref`. `x.len()` must be `32 * y.len()`.
pub fn quant_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), y.len() * QK8_0);
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, id) = q8_0_scale(xb);
        yb.d = f32_to_f16(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = (v * id).round() as i8;
            sum += i32::from(*q);
        }
        yb.s = f32_to_f16(sum as f32 * d);
    }
}

/// `quantize_row_q8_K_ref`. `x.len()` must be `256 * y.len()`. An all-zero block gets zero
/// `bsums` (ggml leaves them unwritten).
pub fn quant_row_q8k(x: &[f32], y: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xb {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        if amax == 0.0 {
            yb.d = 0.0;
            yb.qs = [0; QK_K];
            yb.bsums = [0; QK_K / 16];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, chunk) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = chunk.iter().map(|&q| i16::from(q)).sum();
        }
        yb.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_ties_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(126.7), 127);
        assert_eq!(nearest_int(-127.0), -127);
    }

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        // amax 127 gives d = 1, so quants are round(x) with C's roundf.
        let mut x = [0.0f32; 32];
        x[0] = 127.0;
        x[1] = 0.5;
        x[2] = -0.5;
        x[3] = 2.5;
        x[4] = -126.5;
        let mut y = [BlockQ8_0::zeroed(); 1];
        quant_row_q8_0(&x, &mut y);
        assert_eq!(y[0].d.to_f32(), 1.0);
        assert_eq!(&y[0].qs[..5], &[127, 1, -1, 3, -127]);
    }

    #[test]
    fn q8k_uses_signed_max_and_clamps() {
        let mut x = [0.0f32; 256];
        x[7] = -2.0;
        x[8] = 1.0;
        x[9] = 2.0; // same magnitude as x[7] but later: the first maximum wins
        let mut y = [BlockQ8K::zeroed(); 1];
        quant_row_q8k(&x, &mut y);
        // iscale = -127 / -2 = 63.5
        assert_eq!(y[0].d, 1.0 / 63.5);
        assert_eq!(y[0].qs[7], -127);
        assert_eq!(y[0].qs[8], 64, "63.5 ties to even");
        assert_eq!(y[0].qs[9], 127);
        assert_eq!(y[0].bsums[0], -127 + 64 + 127);
    }

    use bytemuck::Zeroable;
}
