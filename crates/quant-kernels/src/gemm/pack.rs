//! Load-time repacking of weight matrices into the microkernels' panel layouts (`gemm::tile`).
//!
//! Every quantized format is repacked *losslessly* into the int8 layout: each weight is
//! `dw * (u - 128)` (symmetric) or `dw * u + mw` (affine) exactly, since `dw` and `mw` are
//! products of an f16 and an integer of at most 8 bits, which f32 represents exactly. So all
//! formats share one int8 microkernel per ISA.

use crate::KernelError;
use crate::aligned::AlignedBuf;
use crate::blocks::*;
use crate::codec::{dequantize_row, with_blocks};
use crate::fp16::f16_to_f32;
use crate::gemm::act::ActFormat;
use crate::gemm::tile::{Int8Layout, PANEL};
use crate::scalar::dequant::{q4k_quant, q5_quant, q5k_quant, q6k_quant};
use crate::types::QuantType;

/// One source row decoded to unsigned quants plus per-kernel-block scale and min.
struct RowDecode<'a> {
    u: &'a mut [u8],
    dw: &'a mut [f32],
    mw: &'a mut [f32],
}

/// The int8 layout and activation format for a weight format, or `None` for float formats.
pub fn int8_format(ty: QuantType, k: usize) -> Option<(Int8Layout, ActFormat)> {
    Some(match ty {
        QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q5_0 => {
            (Int8Layout::new(32, false, k), ActFormat::Q8_0)
        }
        QuantType::Q4_1 | QuantType::Q5_1 => (Int8Layout::new(32, true, k), ActFormat::Q8_1),
        QuantType::Q4K | QuantType::Q5K => (Int8Layout::new(32, true, k), ActFormat::Q8K),
        QuantType::Q6K => (Int8Layout::new(16, false, k), ActFormat::Q8K),
        _ => return None,
    })
}

fn decode_row(ty: QuantType, src: &[u8], out: RowDecode<'_>) {
    let RowDecode { u, dw, mw } = out;
    macro_rules! each {
        ($b:ty, $per:expr, |$blk:ident, $bi:ident| $body:block) => {{
            with_blocks::<$b, ()>(src, |blocks, first| {
                for (off, $blk) in blocks.iter().enumerate() {
                    let $bi = (first + off) * $per;
                    $body
                }
            });
        }};
    }
    match ty {
        QuantType::Q8_0 => each!(BlockQ8_0, 1, |b, i| {
            dw[i] = f16_to_f32(b.d);
            for (e, &q) in b.qs.iter().enumerate() {
                u[i * 32 + e] = (i32::from(q) + 128) as u8;
            }
        }),
        QuantType::Q4_0 => each!(BlockQ4_0, 1, |b, i| {
            dw[i] = f16_to_f32(b.d);
            for (j, &q) in b.qs.iter().enumerate() {
                u[i * 32 + j] = (q & 0x0F) + 120;
                u[i * 32 + j + 16] = (q >> 4) + 120;
            }
        }),
        QuantType::Q5_0 => each!(BlockQ5_0, 1, |b, i| {
            dw[i] = f16_to_f32(b.d);
            let qh = u32::from_le_bytes(b.qh);
            for e in 0..32 {
                u[i * 32 + e] = q5_quant(&b.qs, qh, e) + 112;
            }
        }),
        QuantType::Q4_1 => each!(BlockQ4_1, 1, |b, i| {
            dw[i] = f16_to_f32(b.d);
            mw[i] = f16_to_f32(b.m);
            for (j, &q) in b.qs.iter().enumerate() {
                u[i * 32 + j] = q & 0x0F;
                u[i * 32 + j + 16] = q >> 4;
            }
        }),
        QuantType::Q5_1 => each!(BlockQ5_1, 1, |b, i| {
            dw[i] = f16_to_f32(b.d);
            mw[i] = f16_to_f32(b.m);
            let qh = u32::from_le_bytes(b.qh);
            for e in 0..32 {
                u[i * 32 + e] = q5_quant(&b.qs, qh, e);
            }
        }),
        QuantType::Q4K => each!(BlockQ4K, 8, |b, i| {
            let (d, dmin) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
            for s in 0..8 {
                let (sc, m) = scale_min_k4(s, &b.scales);
                dw[i + s] = d * f32::from(sc);
                mw[i + s] = -(dmin * f32::from(m));
            }
            for e in 0..256 {
                u[i * 32 + e] = q4k_quant(b, e);
            }
        }),
        QuantType::Q5K => each!(BlockQ5K, 8, |b, i| {
            let (d, dmin) = (f16_to_f32(b.d), f16_to_f32(b.dmin));
            for s in 0..8 {
                let (sc, m) = scale_min_k4(s, &b.scales);
                dw[i + s] = d * f32::from(sc);
                mw[i + s] = -(dmin * f32::from(m));
            }
            for e in 0..256 {
                u[i * 32 + e] = q5k_quant(b, e);
            }
        }),
        QuantType::Q6K => each!(BlockQ6K, 16, |b, i| {
            let d = f16_to_f32(b.d);
            for s in 0..16 {
                dw[i + s] = d * f32::from(b.scales[s]);
            }
            for e in 0..256 {
                u[i * 16 + e] = (i32::from(q6k_quant(b, e)) + 128) as u8;
            }
        }),
        _ => unreachable!("int8_format admits only quantized formats"),
    }
}

/// Bytes the int8 panel layout of an `n`-row matrix takes.
pub fn int8_len(n: usize, lay: &Int8Layout) -> usize {
    n.div_ceil(PANEL) * lay.panel_stride
}

/// Repacks an `n × k` matrix of a quantized format into the int8 panel layout, in zeroed memory of
/// [`int8_len`] bytes.
pub fn pack_int8_into(out: &mut [u8], ty: QuantType, n: usize, k: usize, bytes: &[u8], lay: &Int8Layout) {
    let row_bytes = bytes.len() / n.max(1);
    let flip = if lay.signed && !lay.affine { 0x80u8 } else { 0 };
    if ty == QuantType::Q8_0 && lay.kb == 32 {
        pack_q8_0(n, bytes, row_bytes, lay, out, flip);
    } else {
        pack_decoded(ty, n, k, bytes, row_bytes, lay, out, flip);
    }
}

/// Every format: each row decoded to unsigned quants and scales, then scattered into its
/// panel column.
#[allow(clippy::too_many_arguments)]
fn pack_decoded(ty: QuantType, n: usize, k: usize, bytes: &[u8], row_bytes: usize, lay: &Int8Layout, out: &mut [u8], flip: u8) {
    let mut u = vec![0u8; k];
    let mut dw = vec![0f32; lay.nb];
    let mut mw = vec![0f32; lay.nb];
    for j in 0..n {
        let src = &bytes[j * row_bytes..(j + 1) * row_bytes];
        decode_row(ty, src, RowDecode { u: &mut u, dw: &mut dw, mw: &mut mw });
        let (p, cc) = (j / PANEL, j % PANEL);
        for b in 0..lay.nb {
            let cell = p * lay.panel_stride + b * lay.block_stride;
            for (s, q) in u[b * lay.kb..(b + 1) * lay.kb].chunks_exact(4).enumerate() {
                let dst = cell + s * 64 + cc * 4;
                for t in 0..4 {
                    out[dst + t] = q[t] ^ flip;
                }
            }
            let d = cell + lay.dw_offset() + cc * 4;
            out[d..d + 4].copy_from_slice(&dw[b].to_le_bytes());
            if lay.affine {
                let m = cell + lay.mw_offset() + cc * 4;
                out[m..m + 4].copy_from_slice(&mw[b].to_le_bytes());
            }
        }
    }
}

/// Weight `(j, c)` of a matrix packed by [`pack_int8_into`], read back: `dw · (u − 128)` (or
/// `dw · w` in the signed layout) for symmetric formats, `dw · u + mw` for affine ones. The
/// packing is lossless and this is `dequantize_row`'s arithmetic, so the value is the
/// dequantized weight bit for bit.
pub(crate) fn packed_weight(packed: &[u8], lay: &Int8Layout, j: usize, c: usize) -> f32 {
    let f32_at = |off: usize| f32::from_le_bytes([packed[off], packed[off + 1], packed[off + 2], packed[off + 3]]);
    let (cc, e) = (j % PANEL, c % lay.kb);
    let cell = (j / PANEL) * lay.panel_stride + (c / lay.kb) * lay.block_stride;
    let q = packed[cell + (e / 4) * 64 + cc * 4 + e % 4];
    let dw = f32_at(cell + lay.dw_offset() + cc * 4);
    if lay.affine {
        f32::from(q) * dw + f32_at(cell + lay.mw_offset() + cc * 4)
    } else if lay.signed {
        f32::from(q as i8) * dw
    } else {
        (i32::from(q) - 128) as f32 * dw
    }
}

/// Q8_0, the default model's format, is most of a cold start's packing, and its decode is a
/// byte flip: `u = q + 128` is `q ^ 0x80`, which the signed layout's `flip` undoes. So each
/// cell is filled whole from the panel's 16 source rows side by side (4 quants per store, no
/// staging row), and the output is written once, in order.
fn pack_q8_0(n: usize, bytes: &[u8], row_bytes: usize, lay: &Int8Layout, out: &mut [u8], flip: u8) {
    const BB: usize = std::mem::size_of::<BlockQ8_0>();
    let mask = u32::from_ne_bytes([0x80 ^ flip; 4]);
    for (p, panel) in out.chunks_exact_mut(lay.panel_stride).enumerate() {
        let rows = (n - p * PANEL).min(PANEL);
        let src = &bytes[p * PANEL * row_bytes..(p * PANEL + rows) * row_bytes];
        for (b, cell) in panel.chunks_exact_mut(lay.block_stride).enumerate() {
            // Fixed-size views: the compiler sees every index below is in bounds.
            let Some((quants, rest)) = cell.split_first_chunk_mut::<{ 32 * PANEL }>() else { unreachable!("a Q8_0 cell holds 32 × 16 quants") };
            let Some(scales) = rest.first_chunk_mut::<{ 4 * PANEL }>() else { unreachable!("then 16 scales") };
            for (cc, row) in src.chunks_exact(row_bytes).enumerate() {
                let Some(blk) = row[b * BB..].first_chunk::<BB>() else { unreachable!("rows hold whole blocks") };
                let d = f16_to_f32(half::f16::from_le_bytes([blk[0], blk[1]]));
                scales[cc * 4..cc * 4 + 4].copy_from_slice(&d.to_le_bytes());
                for s in 0..8 {
                    let q = [blk[2 + 4 * s], blk[3 + 4 * s], blk[4 + 4 * s], blk[5 + 4 * s]];
                    let w = u32::from_ne_bytes(q) ^ mask;
                    quants[s * 64 + cc * 4..s * 64 + cc * 4 + 4].copy_from_slice(&w.to_ne_bytes());
                }
            }
        }
    }
}

/// Floats the f32 panel layout of an `n × k` matrix takes.
pub fn f32_len(n: usize, k: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// Packs any weight format into f32 panels (`out`: [`f32_len`] floats) by dequantizing each row.
pub fn pack_f32_from_into(out: &mut [f32], ty: QuantType, n: usize, k: usize, bytes: &[u8]) -> Result<(), KernelError> {
    let row_bytes = ty.row_bytes(k)?;
    zero_panel_padding(out, n, k);
    let mut tmp = vec![0f32; k];
    for j in 0..n {
        dequantize_row(ty, &bytes[j * row_bytes..(j + 1) * row_bytes], &mut tmp)?;
        let (p, cc) = (j / PANEL, j % PANEL);
        let base = p * k * PANEL + cc;
        for (kk, &v) in tmp.iter().enumerate() {
            out[base + kk * PANEL] = v;
        }
    }
    Ok(())
}

/// Zeroes the padding columns of the last panel. They are multiplied but never stored; stale
/// scratch there could be NaN or denormal and slow the kernel down.
fn zero_panel_padding(out: &mut [f32], n: usize, k: usize) {
    if !n.is_multiple_of(PANEL) {
        let p = n.div_ceil(PANEL) - 1;
        for kk in 0..k {
            out[p * k * PANEL + kk * PANEL + n % PANEL..p * k * PANEL + (kk + 1) * PANEL].fill(0.0);
        }
    }
}

/// Packs `W` (`n × k`, row-major) for `C = A · Wᵀ` straight from its rows: the per-call path of
/// attention's `Q·Kᵀ`, so it must not allocate (unlike [`pack_f32_rows_into`], whose row callback
/// needs a staging row).
pub fn pack_f32_nt_into(buf: &mut AlignedBuf, w: &[f32], n: usize, k: usize) {
    let npanels = n.div_ceil(PANEL);
    buf.ensure(npanels * k * PANEL * 4);
    pack_f32_nt_slice(&mut buf.as_f32_mut()[..npanels * k * PANEL], w, n, k);
}

/// As [`pack_f32_nt_into`], into `out` (exactly `n.div_ceil(PANEL)·PANEL·k` values).
pub fn pack_f32_nt_slice(out: &mut [f32], w: &[f32], n: usize, k: usize) {
    zero_panel_padding(out, n, k);
    for (j, row) in w.chunks_exact(k).take(n).enumerate() {
        let base = (j / PANEL) * k * PANEL + j % PANEL;
        for (kk, &v) in row.iter().enumerate() {
            out[base + kk * PANEL] = v;
        }
    }
}

/// Packs `B` (`k × n`, row-major) for `C = A · B`: panel rows are contiguous slices of B's rows.
pub fn pack_f32_nn_into(buf: &mut AlignedBuf, b: &[f32], k: usize, n: usize) {
    let npanels = n.div_ceil(PANEL);
    buf.ensure(npanels * k * PANEL * 4);
    pack_f32_nn_slice(&mut buf.as_f32_mut()[..npanels * k * PANEL], b, k, n, 0..npanels);
}

/// Packs panels `panels` of `B` (`k × n`, row-major) into `out` (`panels.len()·k·PANEL`
/// values): each panel is a contiguous run, so panels packed separately give the same values.
pub fn pack_f32_nn_slice(
    out: &mut [f32],
    b: &[f32],
    k: usize,
    n: usize,
    panels: std::ops::Range<usize>,
) {
    for (i, p) in panels.enumerate() {
        let (c0, c1) = (p * PANEL, ((p + 1) * PANEL).min(n));
        for kk in 0..k {
            let dst = &mut out[(i * k + kk) * PANEL..(i * k + kk + 1) * PANEL];
            dst[..c1 - c0].copy_from_slice(&b[kk * n + c0..kk * n + c1]);
            dst[c1 - c0..].fill(0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Q8_0 fast path writes exactly the bytes the general decode-and-scatter path writes,
    /// for both weight signednesses and a last panel that is only partly filled.
    #[test]
    fn q8_0_fast_path_equals_general_path() {
        let (n, k) = (37, 96);
        let row_bytes = k / 32 * std::mem::size_of::<BlockQ8_0>();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let bytes: Vec<u8> = (0..n * row_bytes)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        for signed in [false, true] {
            let (mut lay, _) = int8_format(QuantType::Q8_0, k).unwrap();
            lay.signed = signed;
            let flip = if signed { 0x80 } else { 0 };
            let size = n.div_ceil(PANEL) * lay.panel_stride;
            let (mut fast, mut general) = (AlignedBuf::zeroed(size), AlignedBuf::zeroed(size));
            pack_q8_0(n, &bytes, row_bytes, &lay, fast.bytes_mut(), flip);
            pack_decoded(QuantType::Q8_0, n, k, &bytes, row_bytes, &lay, general.bytes_mut(), flip);
            assert!(fast.bytes() == general.bytes(), "signed = {signed}");
            let mut whole = AlignedBuf::zeroed(size);
            pack_int8_into(whole.bytes_mut(), QuantType::Q8_0, n, k, &bytes, &lay);
            assert!(whole.bytes() == fast.bytes());
        }
    }
}
