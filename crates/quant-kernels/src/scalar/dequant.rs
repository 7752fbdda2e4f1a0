//! Reference dequantizers: the numerics of ggml's `dequantize_row_*` as gguf-py evaluates them
//! (plain f32 multiplies and adds, never fused), which is what the reference values hold.

use crate::blocks::*;
use crate::fp16::f16_to_f32;
use crate::types::{QK_K, QK8_0};

/// `dequantize_row_q8_0`.
pub fn dequant_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// `dequantize_row_q4_0`.
pub fn dequant_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        for (j, &q) in b.qs.iter().enumerate() {
            out[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
            out[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

/// `dequantize_row_q4_1`.
pub fn dequant_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        for (j, &q) in b.qs.iter().enumerate() {
            out[j] = f32::from(q & 0x0F) * d + m;
            out[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

/// The 5-bit quant `j` (0..32) of a Q5_0/Q5_1 block.
#[inline(always)]
pub(crate) fn q5_quant(qs: &[u8; 16], qh: u32, j: usize) -> u8 {
    let lo = if j < 16 { qs[j] & 0x0F } else { qs[j - 16] >> 4 };
    lo | ((((qh >> j) & 1) as u8) << 4)
}

/// `dequantize_row_q5_0`.
pub fn dequant_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        let qh = u32::from_le_bytes(b.qh);
        for (j, o) in out.iter_mut().enumerate() {
            *o = (i32::from(q5_quant(&b.qs, qh, j)) - 16) as f32 * d;
        }
    }
}

/// `dequantize_row_q5_1`.
pub fn dequant_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = f16_to_f32(b.d);
        let m = f16_to_f32(b.m);
        let qh = u32::from_le_bytes(b.qh);
        for (j, o) in out.iter_mut().enumerate() {
            *o = f32::from(q5_quant(&b.qs, qh, j)) * d + m;
        }
    }
}

/// The unsigned 4-bit quant of element `e` (0..256) of a Q4_K block.
#[inline(always)]
pub(crate) fn q4k_quant(b: &BlockQ4K, e: usize) -> u8 {
    let (sub, l) = (e / 32, e % 32);
    let byte = b.qs[(sub / 2) * 32 + l];
    if sub % 2 == 0 { byte & 0x0F } else { byte >> 4 }
}

/// The unsigned 5-bit quant of element `e` (0..256) of a Q5_K block.
#[inline(always)]
pub(crate) fn q5k_quant(b: &BlockQ5K, e: usize) -> u8 {
    let (sub, l) = (e / 32, e % 32);
    let byte = b.qs[(sub / 2) * 32 + l];
    let lo = if sub % 2 == 0 { byte & 0x0F } else { byte >> 4 };
    lo | (((b.qh[l] >> sub) & 1) << 4)
}

/// The signed 6-bit quant (`q - 32`, in -32..32) of element `e` (0..256) of a Q6_K block.
#[inline(always)]
pub(crate) fn q6k_quant(b: &BlockQ6K, e: usize) -> i8 {
    let (half, r) = (e / 128, e % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = b.ql[half * 64 + (quarter % 2) * 32 + l];
    let lo = if quarter < 2 { ql & 0x0F } else { ql >> 4 };
    let hi = (b.qh[half * 32 + l] >> (2 * quarter)) & 3;
    ((lo | (hi << 4)) as i8) - 32
}

/// `dequantize_row_q4_K`.
pub fn dequant_row_q4k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        for (sub, o) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(sub, &b.scales);
            let d1 = d * f32::from(sc);
            let m1 = dmin * f32::from(m);
            for (l, v) in o.iter_mut().enumerate() {
                *v = d1 * f32::from(q4k_quant(b, sub * 32 + l)) - m1;
            }
        }
    }
}

/// `dequantize_row_q5_K`.
pub fn dequant_row_q5k(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        let dmin = f16_to_f32(b.dmin);
        for (sub, o) in out.chunks_exact_mut(32).enumerate() {
            let (sc, m) = scale_min_k4(sub, &b.scales);
            let d1 = d * f32::from(sc);
            let m1 = dmin * f32::from(m);
            for (l, v) in o.iter_mut().enumerate() {
                *v = d1 * f32::from(q5k_quant(b, sub * 32 + l)) - m1;
            }
        }
    }
}

/// `dequantize_row_q6_K`.
pub fn dequant_row_q6k(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_to_f32(b.d);
        for (e, v) in out.iter_mut().enumerate() {
            *v = d * f32::from(b.scales[e / 16]) * f32::from(q6k_quant(b, e));
        }
    }
}

/// `dequantize_row_q8_K` (for tests of the activation quantizer).
pub fn dequant_row_q8k(x: &[BlockQ8K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = b.d * f32::from(q);
        }
    }
}

/// F16 bytes (little-endian) to f32.
pub fn dequant_row_f16(x: &[u8], y: &mut [f32]) {
    for (c, o) in x.chunks_exact(2).zip(y.iter_mut()) {
        *o = f16_to_f32(half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])));
    }
}

/// BF16 bytes (little-endian) to f32.
pub fn dequant_row_bf16(x: &[u8], y: &mut [f32]) {
    for (c, o) in x.chunks_exact(2).zip(y.iter_mut()) {
        *o = crate::fp16::bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// F32 bytes (little-endian) to f32.
pub fn dequant_row_f32(x: &[u8], y: &mut [f32]) {
    for (c, o) in x.chunks_exact(4).zip(y.iter_mut()) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}
