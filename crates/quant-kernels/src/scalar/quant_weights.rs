//! Reference weight quantizers: bit-identical to ggml's `quantize_row_{q4_0,q4_1,q5_0,q5_1,
//! q4_K,q5_K,q6_K}_ref`, the functions `llama-quantize` runs when it has no importance matrix.
//!
//! Bit-exactness depends on evaluating every float operation in ggml's order, with ggml's
//! association (`w*l*x` is `(w*l)*x`) and without fused multiply-adds, and on copying C's
//! integer conversions (`(int8_t)f`, `(uint8_t)int`) literally. The comments name the C
//! idiom each odd-looking line reproduces; none of them is an optimisation.

use crate::blocks::{BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K};
use crate::fp16::{f16_to_f32, f32_to_f16};
use crate::scalar::quant::nearest_int;
use crate::types::{QK_K, QK8_0};

/// ggml's `GROUP_MAX_EPS`: groups whose largest magnitude is below this are all-zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// C's `(int8_t)f` as compiled for x86-64: `cvttss2si` to a 32-bit integer (truncation; NaN and
/// out-of-range give `INT_MIN`), then the low byte. Only NaN or infinite inputs reach the
/// out-of-range case; reproducing it keeps even those blocks identical.
#[inline(always)]
fn c_f32_to_i8(v: f32) -> i8 {
    let i = if v.is_nan() || !(-2_147_483_648.0..2_147_483_648.0).contains(&v) {
        i32::MIN
    } else {
        v as i32
    };
    i as i8
}

/// The sign-carrying absolute maximum of a group, as ggml's Q4_0/Q5_0 and `make_qx_quants`
/// find it: the first element of largest magnitude wins (strict `>`).
#[inline(always)]
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    (amax, max)
}

/// C's `FLT_MAX`/`-FLT_MAX` scan with `<` / `>` (NaN never wins), for Q4_1/Q5_1.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// Packs 32 five-bit quants into Q5_0/Q5_1's low nibbles and `qh` bits.
#[inline(always)]
fn pack_q5(q: &[u8; QK8_0]) -> ([u8; 16], [u8; 4]) {
    let mut qs = [0u8; 16];
    let mut qh = 0u32;
    for j in 0..16 {
        let (a, b) = (q[j], q[j + 16]);
        qs[j] = (a & 0x0F) | ((b & 0x0F) << 4);
        qh |= u32::from((a & 0x10) >> 4) << j;
        qh |= u32::from((b & 0x10) >> 4) << (j + 16);
    }
    (qs, qh.to_le_bytes())
}

/// `quantize_row_q4_0_ref` for one block of 32.
pub fn quant_block_q4_0(x: &[f32]) -> BlockQ4_0 {
    debug_assert_eq!(x.len(), QK8_0);
    let (_, max) = signed_absmax(x);
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        // `MIN(15, (int8_t)(x*id + 8.5f))` stored into a `uint8_t`.
        let a = c_f32_to_i8(x[j] * id + 8.5).min(15) as u8;
        let b = c_f32_to_i8(x[j + 16] * id + 8.5).min(15) as u8;
        qs[j] = a | (b << 4);
    }
    BlockQ4_0 {
        d: f32_to_f16(d),
        qs,
    }
}

/// `quantize_row_q4_1_ref` for one block of 32.
pub fn quant_block_q4_1(x: &[f32]) -> BlockQ4_1 {
    debug_assert_eq!(x.len(), QK8_0);
    let (min, max) = min_max(x);
    let d = (max - min) / 15.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; 16];
    for j in 0..16 {
        let a = c_f32_to_i8((x[j] - min) * id + 0.5).min(15) as u8;
        let b = c_f32_to_i8((x[j + 16] - min) * id + 0.5).min(15) as u8;
        qs[j] = a | (b << 4);
    }
    BlockQ4_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(min),
        qs,
    }
}

/// `quantize_row_q5_0_ref` for one block of 32.
pub fn quant_block_q5_0(x: &[f32]) -> BlockQ5_0 {
    debug_assert_eq!(x.len(), QK8_0);
    let (_, max) = signed_absmax(x);
    let d = max / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; QK8_0];
    for (qi, &v) in q.iter_mut().zip(x) {
        *qi = c_f32_to_i8(v * id + 16.5).min(31) as u8;
    }
    let (qs, qh) = pack_q5(&q);
    BlockQ5_0 {
        d: f32_to_f16(d),
        qh,
        qs,
    }
}

/// `quantize_row_q5_1_ref` for one block of 32.
pub fn quant_block_q5_1(x: &[f32]) -> BlockQ5_1 {
    debug_assert_eq!(x.len(), QK8_0);
    let (min, max) = min_max(x);
    let d = (max - min) / 31.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0u8; QK8_0];
    for (qi, &v) in q.iter_mut().zip(x) {
        // `(uint8_t)(x + 0.5f)`: no clamp in ggml; the low byte of the truncated value.
        *qi = c_f32_to_i8((v - min) * id + 0.5) as u8;
    }
    let (qs, qh) = pack_q5(&q);
    BlockQ5_1 {
        d: f32_to_f16(d),
        m: f32_to_f16(min),
        qh,
        qs,
    }
}

/// ggml's `make_qkx2_quants` with `use_mad = false`: fits `x ≈ scale * L - the_min` with
/// `L` in `0..=nmax` by weighted least squares over `nstep + 1` candidate scales. Returns
/// `(scale, the_min)` and leaves the chosen quants in `l`.
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l[..n].fill(0);
        return (0.0, -min);
    }
    let nmax_f = nmax as f32;
    let mut iscale = nmax_f / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l[i] = q as u8;
        let diff = scale * f32::from(l[i]) + min - x[i];
        best_error += weights[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; QK_K];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax_f) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = q as u8;
            let w = weights[i];
            let lf = q as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * f32::from(laux[i]) + this_min - x[i];
                cur_error += weights[i] * (diff * diff);
            }
            if cur_error < best_error {
                l[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights (weights `x²`):
/// symmetric quants `L - nmax` in `-nmax..nmax`, scale refined over 18 perturbed candidates.
/// Leaves `L` (biased by `nmax`) in `l` and returns the scale.
fn make_qx_quants(x: &[f32], nmax: i32, l: &mut [i8]) -> f32 {
    let (amax, max) = {
        // Same scan as `signed_absmax` but with ggml's `ax > amax` spelling; identical results.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            let ax = v.abs();
            if ax > amax {
                amax = ax;
                max = v;
            }
        }
        (amax, max)
    };
    if amax < GROUP_MAX_EPS {
        l.fill(0);
        return 0.0;
    }
    let nmax_f = nmax as f32;
    let quant = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let mut iscale = -nmax_f / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for (li, &v) in l.iter_mut().zip(x) {
        let q = quant(iscale, v);
        *li = (q + nmax) as i8;
        let w = v * v;
        let qf = q as f32;
        sumlx += w * v * qf;
        suml2 += w * qf * qf;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax_f + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let q = quant(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * q;
            suml2 += w * q * q;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &v) in l.iter_mut().zip(x) {
                *li = (quant(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The 6-bit sub-block scales and mins of a Q4_K/Q5_K block, quantized against their maxima
/// and packed as `get_scale_min_k4` reads them; returns `(scales, d, dmin)`.
fn pack_k4_scales(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; 12], f32, f32) {
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; 12];
    for j in 0..8 {
        // `uint8_t ls = nearest_int(...)`: the int is truncated to a byte before the clamp.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    (packed, max_scale / 63.0, max_min / 63.0)
}

/// The first pass shared by Q4_K and Q5_K: per 32-element sub-block, weights
/// `sqrt(mean(x²)) + |x|` and a `make_qkx2_quants` fit. Returns quants, scales and mins.
fn k4_first_pass(x: &[f32], nmax: i32, rmin: f32, nstep: i32) -> ([u8; QK_K], [f32; 8], [f32; 8]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0.0f32; 8];
    let mut mins = [0.0f32; 8];
    let mut weights = [0.0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        (scales[j], mins[j]) = make_qkx2_quants(
            xs,
            &weights,
            nmax,
            &mut l[32 * j..32 * j + 32],
            rmin,
            0.1,
            nstep,
        );
    }
    (l, scales, mins)
}

/// Requantizes each sub-block against the f16-rounded scales it will be decoded with. A
/// sub-block whose scale rounds to zero keeps its first-pass quants, as in ggml.
fn k4_requantize(
    x: &[f32],
    packed: &[u8; 12],
    d: half::f16,
    dmin: half::f16,
    nmax: i32,
    l: &mut [u8; QK_K],
) {
    for j in 0..8 {
        let (sc, m) = crate::blocks::scale_min_k4(j, packed);
        let dj = f16_to_f32(d) * f32::from(sc);
        if dj == 0.0 {
            continue;
        }
        let dm = f16_to_f32(dmin) * f32::from(m);
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
}

/// `quantize_row_q4_K_ref` for one super-block of 256.
pub fn quant_block_q4k(x: &[f32]) -> BlockQ4K {
    debug_assert_eq!(x.len(), QK_K);
    let (mut l, scales, mins) = k4_first_pass(x, 15, -1.0, 20);
    let (packed, d, dmin) = pack_k4_scales(&scales, &mins);
    let (d, dmin) = (f32_to_f16(d), f32_to_f16(dmin));
    k4_requantize(x, &packed, d, dmin, 15, &mut l);
    let mut qs = [0u8; QK_K / 2];
    for (p, chunk) in qs.chunks_exact_mut(32).enumerate() {
        for (i, q) in chunk.iter_mut().enumerate() {
            *q = l[64 * p + i] | (l[64 * p + i + 32] << 4);
        }
    }
    BlockQ4K {
        d,
        dmin,
        scales: packed,
        qs,
    }
}

/// `quantize_row_q5_K_ref` for one super-block of 256.
pub fn quant_block_q5k(x: &[f32]) -> BlockQ5K {
    debug_assert_eq!(x.len(), QK_K);
    let (mut l, scales, mins) = k4_first_pass(x, 31, -0.5, 15);
    let (packed, d, dmin) = pack_k4_scales(&scales, &mins);
    let (d, dmin) = (f32_to_f16(d), f32_to_f16(dmin));
    k4_requantize(x, &packed, d, dmin, 31, &mut l);
    let mut qs = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 8];
    for p in 0..4 {
        for j in 0..32 {
            let (mut l1, mut l2) = (l[64 * p + j], l[64 * p + j + 32]);
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= 1 << (2 * p);
            }
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= 2 << (2 * p);
            }
            qs[32 * p + j] = l1 | (l2 << 4);
        }
    }
    BlockQ5K {
        d,
        dmin,
        scales: packed,
        qh,
        qs,
    }
}

/// `quantize_row_q6_K_ref` for one super-block of 256.
pub fn quant_block_q6k(x: &[f32]) -> BlockQ6K {
    debug_assert_eq!(x.len(), QK_K);
    let mut l = [0i8; QK_K];
    let mut scales = [0.0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..16 * ib + 16]);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return BlockQ6K {
            ql: [0; QK_K / 2],
            qh: [0; QK_K / 4],
            scales: [0; QK_K / 16],
            d: f32_to_f16(0.0),
        };
    }
    let iscale = -128.0 / max_scale;
    let d = f32_to_f16(1.0 / iscale);
    let mut sc = [0i8; QK_K / 16];
    for (s, &scale) in sc.iter_mut().zip(&scales) {
        // `int8_t = MIN(127, nearest_int(...))`: truncated to a byte after the clamp.
        *s = nearest_int(iscale * scale).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let dj = f16_to_f32(d) * f32::from(sc[j]);
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for half in 0..2 {
        let (lb, qlb, qhb) = (&l[128 * half..], &mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            let q = [
                lb[i] as u8,
                lb[i + 32] as u8,
                lb[i + 64] as u8,
                lb[i + 96] as u8,
            ];
            qlb[i] = (q[0] & 0xF) | ((q[2] & 0xF) << 4);
            qlb[i + 32] = (q[1] & 0xF) | ((q[3] & 0xF) << 4);
            qhb[i] = (q[0] >> 4) | ((q[1] >> 4) << 2) | ((q[2] >> 4) << 4) | ((q[3] >> 4) << 6);
        }
    }
    BlockQ6K {
        ql,
        qh,
        scales: sc,
        d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_float_to_int8_matches_x86_truncation() {
        assert_eq!(c_f32_to_i8(16.9), 16);
        assert_eq!(c_f32_to_i8(-0.9), 0);
        assert_eq!(c_f32_to_i8(-1.5), -1);
        assert_eq!(c_f32_to_i8(300.0), 44, "low byte of 300");
        assert_eq!(c_f32_to_i8(f32::NAN), 0, "INT_MIN's low byte");
        assert_eq!(c_f32_to_i8(f32::INFINITY), 0);
        assert_eq!(c_f32_to_i8(3e9), 0);
    }

    #[test]
    fn qx_quants_all_zero_group_gives_zero_scale() {
        let mut l = [5i8; 16];
        assert_eq!(make_qx_quants(&[0.0; 16], 32, &mut l), 0.0);
        assert_eq!(l, [0; 16]);
    }

    #[test]
    fn qkx2_constant_group_has_zero_scale_and_its_min() {
        let mut l = [9u8; 32];
        let (scale, the_min) =
            make_qkx2_quants(&[-0.25; 32], &[1.0; 32], 15, &mut l, -1.0, 0.1, 20);
        // min = max = -0.25: nothing to spread, the offset carries the value.
        assert_eq!((scale, the_min), (0.0, 0.25));
        assert_eq!(l, [0; 32]);
    }

    #[test]
    fn q6k_zero_block_is_all_zero_bytes() {
        let b = quant_block_q6k(&[0.0; QK_K]);
        assert!(bytemuck::bytes_of(&b).iter().all(|&x| x == 0));
    }
}
