//! Quantizing a GEMM's f32 activations, once per call, into the weight format's `vec_dot_type`,
//! laid out as the int8 microkernels read it: int8 rows plus per-(row, kernel block) scale,
//! `-128 * sum` correction (symmetric formats) and `d * sum` (affine formats).

use bytemuck::Zeroable;

use crate::blocks::BlockQ8K;
use crate::dispatch::Kernels;
use crate::fp16::{f16_to_f32, f32_to_f16};
use crate::gemm::tile::Int8Layout;
use crate::scalar::quant::{q8_0_scale, quant_row_q8k};
use crate::types::{QK_K, QK8_0};


/// The activation format a packed int8 matrix wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    /// `quantize_row_q8_0_ref` (for Q8_0, Q4_0, Q5_0).
    Q8_0,
    /// `quantize_row_q8_1_ref` (for Q4_1, Q5_1).
    Q8_1,
    /// `quantize_row_q8_K_ref` (for the K-quants).
    Q8K,
}

/// Scalar Q8_0 activation row: the quants of `quantize_row_q8_0_ref`, the block scale as the f16
/// value ggml's dot products read back (`d`), the unrounded f32 scale (`draw`, which Q8_1's
/// `s = d * sum` uses), and `-128 * sum(q)` per block.
pub fn quant_act_q8_0(x: &[f32], q: &mut [i8], d: &mut [f32], corr: &mut [i32], draw: &mut [f32]) {
    for (b, (xb, qb)) in x.chunks_exact(QK8_0).zip(q.chunks_exact_mut(QK8_0)).enumerate() {
        let (dd, id) = q8_0_scale(xb);
        let mut sum = 0i32;
        for (o, &v) in qb.iter_mut().zip(xb) {
            *o = (v * id).round() as i8;
            sum += i32::from(*o);
        }
        d[b] = f16_to_f32(f32_to_f16(dd));
        draw[b] = dd;
        corr[b] = -128 * sum;
    }
}

/// Scalar Q8_K activation row: the quants of `quantize_row_q8_K_ref`, then per kernel block of
/// `kb` (16 or 32) elements the super-block's scale `d`, `-128 * sum(q)` and `d * sum(q)`.
pub fn quant_act_q8k(
    x: &[f32],
    kb: usize,
    q: &mut [i8],
    ad: &mut [f32],
    ac: &mut [i32],
    asum: &mut [f32],
) {
    let per_super = QK_K / kb;
    let mut blk = [BlockQ8K::zeroed()];
    for (s, (xb, qb)) in x.chunks_exact(QK_K).zip(q.chunks_exact_mut(QK_K)).enumerate() {
        quant_row_q8k(xb, &mut blk);
        let blk = &blk[0];
        qb.copy_from_slice(&blk.qs);
        for j in 0..per_super {
            let sum: i32 =
                blk.bsums[j * kb / 16..(j + 1) * kb / 16].iter().map(|&v| i32::from(v)).sum();
            let b = s * per_super + j;
            ad[b] = blk.d;
            ac[b] = -128 * sum;
            asum[b] = blk.d * sum as f32;
        }
    }
}

/// Quantizes one activation row into the microkernel's inputs. Slices are one row long:
/// `q` has `k` entries, `ad`/`ac`/`asum` have `lay.nb`.
#[allow(clippy::too_many_arguments)]
pub fn quantize_row(
    kernels: &Kernels,
    fmt: ActFormat,
    lay: &Int8Layout,
    x: &[f32],
    q: &mut [i8],
    ad: &mut [f32],
    ac: &mut [i32],
    asum: &mut [f32],
) {
    match fmt {
        // `asum` doubles as the unrounded-scale output; Q8_0 weights never read it.
        ActFormat::Q8_0 => kernels.quant_act_q8_0(x, q, ad, ac, asum),
        ActFormat::Q8_1 => {
            // Same quants and scale as Q8_0, plus `s = f16(sum * d)` with the unrounded d.
            kernels.quant_act_q8_0(x, q, ad, ac, asum);
            for (s, &c) in asum.iter_mut().zip(ac.iter()) {
                *s = f16_to_f32(f32_to_f16((c / -128) as f32 * *s));
            }
        }
        ActFormat::Q8K => kernels.quant_act_q8k(x, lay.kb, q, ad, ac, asum),
    }
}
