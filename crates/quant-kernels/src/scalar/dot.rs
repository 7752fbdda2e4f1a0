//! Reference dot products, weight format × its `vec_dot_type`: the numerics of ggml's
//! `ggml_vec_dot_*_generic` (integer sums per block are exact; the f32 expressions are
//! evaluated in the same order, unfused).

use crate::blocks::*;
use crate::fp16::f16_to_f32;

use super::dequant::{q4k_quant, q5_quant, q5k_quant, q6k_quant};

/// `ggml_vec_dot_q8_0_q8_0_generic`.
pub fn dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi: i32 = a.qs.iter().zip(&b.qs).map(|(&p, &q)| i32::from(p) * i32::from(q)).sum();
        sumf += sumi as f32 * (f16_to_f32(a.d) * f16_to_f32(b.d));
    }
    sumf
}

/// `ggml_vec_dot_q4_0_q8_0_generic`.
pub fn dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (i32::from(a.qs[j] & 0x0F) - 8) * i32::from(b.qs[j]);
            sumi += (i32::from(a.qs[j] >> 4) - 8) * i32::from(b.qs[j + 16]);
        }
        sumf += sumi as f32 * f16_to_f32(a.d) * f16_to_f32(b.d);
    }
    sumf
}

/// `ggml_vec_dot_q4_1_q8_1_generic`.
pub fn dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += i32::from(a.qs[j] & 0x0F) * i32::from(b.qs[j]);
            sumi += i32::from(a.qs[j] >> 4) * i32::from(b.qs[j + 16]);
        }
        sumf += (f16_to_f32(a.d) * f16_to_f32(b.d)) * sumi as f32
            + f16_to_f32(a.m) * f16_to_f32(b.s);
    }
    sumf
}

/// `ggml_vec_dot_q5_0_q8_0_generic`.
pub fn dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let sumi: i32 = (0..32)
            .map(|j| (i32::from(q5_quant(&a.qs, qh, j)) - 16) * i32::from(b.qs[j]))
            .sum();
        sumf += (f16_to_f32(a.d) * f16_to_f32(b.d)) * sumi as f32;
    }
    sumf
}

/// `ggml_vec_dot_q5_1_q8_1_generic`.
pub fn dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let qh = u32::from_le_bytes(a.qh);
        let sumi: i32 =
            (0..32).map(|j| i32::from(q5_quant(&a.qs, qh, j)) * i32::from(b.qs[j])).sum();
        sumf += (f16_to_f32(a.d) * f16_to_f32(b.d)) * sumi as f32
            + f16_to_f32(a.m) * f16_to_f32(b.s);
    }
    sumf
}

/// The shared tail of ggml's K-quant generic dots: eight lane sums of `scale * q * a`, folded
/// with `d` into eight f32 partial sums, and the min term subtracted from the total.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn k_dot(
    quant: impl Fn(usize) -> i32,
    scale: impl Fn(usize) -> i32,
    group: usize,
    y: &BlockQ8K,
    d: f32,
    dmin_sumi: Option<(f32, i32)>,
    sums: &mut [f32; 8],
    sumf: &mut f32,
) {
    let mut aux32 = [0i32; 8];
    for e0 in (0..256).step_by(8) {
        let sc = scale(e0 / group);
        for (l, acc) in aux32.iter_mut().enumerate() {
            *acc += sc * (quant(e0 + l) * i32::from(y.qs[e0 + l]));
        }
    }
    let d = d * y.d;
    for (s, &a) in sums.iter_mut().zip(&aux32) {
        *s += d * a as f32;
    }
    if let Some((dmin, sumi)) = dmin_sumi {
        *sumf -= dmin * y.d * sumi as f32;
    }
}

fn mins_dot(scales: &[u8; 12], y: &BlockQ8K) -> i32 {
    (0..16).map(|j| i32::from(y.bsums[j]) * i32::from(scale_min_k4(j / 2, scales).1)).sum()
}

/// `ggml_vec_dot_q4_K_q8_K_generic`.
pub fn dot_q4k_q8k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi = mins_dot(&a.scales, b);
        k_dot(
            |e| i32::from(q4k_quant(a, e)),
            |s| i32::from(scale_min_k4(s, &a.scales).0),
            32,
            b,
            f16_to_f32(a.d),
            Some((f16_to_f32(a.dmin), sumi)),
            &mut sums,
            &mut sumf,
        );
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

/// `ggml_vec_dot_q5_K_q8_K_generic`.
pub fn dot_q5k_q8k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        let sumi = mins_dot(&a.scales, b);
        k_dot(
            |e| i32::from(q5k_quant(a, e)),
            |s| i32::from(scale_min_k4(s, &a.scales).0),
            32,
            b,
            f16_to_f32(a.d),
            Some((f16_to_f32(a.dmin), sumi)),
            &mut sums,
            &mut sumf,
        );
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

/// `ggml_vec_dot_q6_K_q8_K_generic`.
pub fn dot_q6k_q8k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sums = [0.0f32; 8];
    let mut sumf = 0.0f32;
    for (a, b) in x.iter().zip(y) {
        k_dot(
            |e| i32::from(q6k_quant(a, e)),
            |s| i32::from(a.scales[s]),
            16,
            b,
            f16_to_f32(a.d),
            None,
            &mut sums,
            &mut sumf,
        );
    }
    sums.iter().fold(sumf, |acc, &s| acc + s)
}

/// Plain f32 dot, summed left to right (the reference for the SIMD f32 dots).
pub fn dot_f32(x: &[f32], y: &[f32]) -> f32 {
    x.iter().zip(y).fold(0.0f32, |acc, (&a, &b)| acc + a * b)
}
