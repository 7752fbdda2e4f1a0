//! Block structs with exactly ggml's layout (`ggml-common.h`).
//!
//! All are `#[repr(C)]`, `Pod` and free of padding, so a GGUF tensor's bytes can be viewed as a
//! slice of blocks with `bytemuck` (when suitably aligned; the byte-level API copes with any
//! alignment). Scales are `half::f16` stored little-endian, like ggml's `ggml_half`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::types::{QK_K, QK8_0};

#[cfg(target_endian = "big")]
compile_error!("GGUF block layouts are little-endian; big-endian targets are not supported");

/// `block_q8_0`: `x[i] = d * qs[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    /// Scale.
    pub d: f16,
    /// Quants.
    pub qs: [i8; QK8_0],
}

/// `block_q8_1`: like Q8_0 plus `s = d * sum(qs)` (an activation format).
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    /// Scale.
    pub d: f16,
    /// `d * sum(qs)`, rounded to f16.
    pub s: f16,
    /// Quants.
    pub qs: [i8; QK8_0],
}

/// `block_q4_0`: `x[j] = d * ((qs[j] & 15) - 8)`, `x[j + 16] = d * ((qs[j] >> 4) - 8)`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    /// Scale.
    pub d: f16,
    /// Nibbles: low nibble is element `j`, high nibble element `j + 16`.
    pub qs: [u8; QK8_0 / 2],
}

/// `block_q4_1`: `x = d * q + m` with 4-bit unsigned `q`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    /// Scale.
    pub d: f16,
    /// Min (added).
    pub m: f16,
    /// Nibbles, as in Q4_0.
    pub qs: [u8; QK8_0 / 2],
}

/// `block_q5_0`: `x = d * (q - 16)` with 5-bit `q`; bit 4 of element `j` is bit `j` of `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    /// Scale.
    pub d: f16,
    /// Fifth bits, little-endian `u32`.
    pub qh: [u8; 4],
    /// Low nibbles, as in Q4_0.
    pub qs: [u8; QK8_0 / 2],
}

/// `block_q5_1`: `x = d * q + m` with 5-bit unsigned `q`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    /// Scale.
    pub d: f16,
    /// Min (added).
    pub m: f16,
    /// Fifth bits, little-endian `u32`.
    pub qh: [u8; 4],
    /// Low nibbles, as in Q4_0.
    pub qs: [u8; QK8_0 / 2],
}

/// `block_q4_K`: 8 sub-blocks of 32, `x = d * sc * q - dmin * m` with 6-bit `sc`, `m`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block mins.
    pub dmin: f16,
    /// Packed 6-bit scales and mins (see `get_scale_min_k4`).
    pub scales: [u8; 12],
    /// 4-bit quants: bytes `32*p..32*p+32` hold sub-block `2p` (low) and `2p+1` (high).
    pub qs: [u8; QK_K / 2],
}

/// `block_q5_K`: as Q4_K with a fifth bit per quant in `qh`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    /// Super-block scale for the sub-block scales.
    pub d: f16,
    /// Super-block scale for the sub-block mins.
    pub dmin: f16,
    /// Packed 6-bit scales and mins.
    pub scales: [u8; 12],
    /// High bits: bit `s` of `qh[l]` is the fifth bit of element `l` of sub-block `s`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits, laid out as in Q4_K.
    pub qs: [u8; QK_K / 2],
}

/// `block_q6_K`: 16 sub-blocks of 16, `x = d * scales[s] * (q - 32)` with 6-bit `q`.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    /// Low 4 bits of the quants.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits of the quants.
    pub qh: [u8; QK_K / 4],
    /// Sub-block scales.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}

/// `block_q8_K`: 256 activations, f32 scale, int8 quants and their sums in groups of 16.
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    /// Scale (f32, unlike the other formats).
    pub d: f32,
    /// Quants.
    pub qs: [i8; QK_K],
    /// `bsums[j] = sum(qs[16*j..16*j+16])`.
    pub bsums: [i16; QK_K / 16],
}

const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

/// Unpacks the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's
/// `get_scale_min_k4`).
#[inline]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}
