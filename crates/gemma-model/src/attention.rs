//! Bidirectional attention of one text, all query heads sharing the single key/value head.
//!
//! The query rows of a token are its heads laid end to end (`n_head · head_dim` values), so a
//! block of `B` tokens *is* a `(B·n_head) × head_dim` row-major matrix with no copy: every query
//! head of the block is scored against the shared keys in one matrix product, `S = Q·Kᵀ`, the
//! softmax runs over rows of `S`, and `O = P·V` lands directly in the attention output rows in
//! the layout the output projection reads. Keys are restricted to the span the block can see
//! (the whole text on full layers, the block ± half window on sliding layers), and the window is
//! applied per row inside that span.
//!
//! A block's result depends only on its text and its position in the text, never on other
//! texts or on how blocks are spread over threads: the per-text half of the batch-independence
//! invariant.

use quant_kernels::{GemmScratch, Kernels, Serial, gemm_f32_nn, gemm_f32_nt};

use crate::activation::exp_f32;

/// Tokens per query block. Large enough that the two products are real matrix products, small
/// enough that the scores of a block (`QUERY_BLOCK · n_head · keys`) stay in L2.
pub(crate) const QUERY_BLOCK: usize = 32;

/// Shape of one attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    /// Query heads per token.
    pub n_head: usize,
    /// Values per head (queries, keys and values alike).
    pub head_dim: usize,
    /// `Some(w)`: key `j` is visible to query `i` iff `|i − j| ≤ w`. `None`: all keys.
    pub half_window: Option<usize>,
    /// Multiplier applied to `q·k` before the softmax.
    pub scale: f32,
}

/// Scores needed by one block: `QUERY_BLOCK · n_head · max_keys` floats.
pub(crate) fn scores_len(shape: &AttnShape, max_tokens: usize) -> usize {
    QUERY_BLOCK * shape.n_head * max_tokens
}

/// The keys query block `block` of a text of `t` tokens can see: `[first, end)`.
pub(crate) fn key_span(shape: &AttnShape, t: usize, block: usize) -> (usize, usize) {
    let i0 = block * QUERY_BLOCK;
    let i1 = (i0 + QUERY_BLOCK).min(t);
    match shape.half_window {
        Some(w) => (i0.saturating_sub(w), (i1 + w).min(t)),
        None => (0, t),
    }
}

/// Attention of query block `block` of one text, in place.
///
/// `q_block` holds the block's query rows (`rows × n_head·head_dim`) and receives its output
/// rows; `k` and `v` are the whole text's key and value rows (`t × head_dim`). `scores` must
/// hold at least [`scores_len`] floats for this text's length; on return its first
/// `rows·n_head × keys` values are the softmax probabilities. Returns the first key index.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend_block(
    kernels: &Kernels,
    gemm: &mut GemmScratch,
    shape: &AttnShape,
    q_block: &mut [f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    block: usize,
    scores: &mut [f32],
) -> usize {
    let d = shape.head_dim;
    let h = shape.n_head;
    let i0 = block * QUERY_BLOCK;
    let (j0, j1) = key_span(shape, t, block);
    let n = j1 - j0;
    let rows = q_block.len() / d;
    let s = &mut scores[..rows * n];
    let kv = j0 * d..j1 * d;
    if let Err(e) = gemm_f32_nt(
        kernels,
        q_block,
        rows,
        d,
        &k[kv.clone()],
        n,
        s,
        gemm,
        &Serial,
    ) {
        unreachable!("attention operands are sized from the block: {e}");
    }
    kernels.vectorize(|| {
        for (r, row) in s.chunks_exact_mut(n).enumerate() {
            let i = i0 + r / h;
            let (lo, hi) = match shape.half_window {
                Some(w) => (i.saturating_sub(w).max(j0) - j0, (i + w + 1).min(j1) - j0),
                None => (0, n),
            };
            softmax_span(row, lo, hi, shape.scale);
        }
    });
    if let Err(e) = gemm_f32_nn(kernels, s, rows, n, &v[kv], d, q_block, gemm, &Serial) {
        unreachable!("attention operands are sized from the block: {e}");
    }
    j0
}

/// Softmax of `row[lo..hi] · scale` in place; entries outside the span become 0.
#[inline(always)]
fn softmax_span(row: &mut [f32], lo: usize, hi: usize, scale: f32) {
    let span = &mut row[lo..hi];
    // Lane-wise maxima with plain comparisons so the loop vectorises (`f32::max` does not).
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = span.chunks_exact_mut(8);
    for c in &mut chunks {
        for (m, x) in lanes.iter_mut().zip(c.iter_mut()) {
            *x *= scale;
            *m = if *x > *m { *x } else { *m };
        }
    }
    for x in chunks.into_remainder() {
        *x *= scale;
        lanes[0] = if *x > lanes[0] { *x } else { lanes[0] };
    }
    let max = lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    // The exponentials as a plain map (which vectorises at any width), then the sum over the
    // same eight lanes as always, so the bits do not depend on the vector width.
    for x in span.iter_mut() {
        *x = exp_f32(*x - max);
    }
    let mut acc = [0.0f32; 8];
    let mut chunks = span.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for &x in chunks.remainder() {
        sum += x;
    }
    let inv = 1.0 / sum;
    for x in span.iter_mut() {
        *x *= inv;
    }
    row[..lo].fill(0.0);
    row[hi..].fill(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Largest absolute difference from the `f64` reference attention.
    const ATTN_ABS_TOL: f64 = 2e-6;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(7);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as f32 / u32::MAX as f32 * 2.0 - 1.0
            })
            .collect()
    }

    /// Attention written from the definition, in f64, one (query, head) at a time.
    fn reference(shape: &AttnShape, q: &[f32], k: &[f32], v: &[f32], t: usize) -> Vec<f64> {
        let (h, d) = (shape.n_head, shape.head_dim);
        let mut out = vec![0.0f64; t * h * d];
        for i in 0..t {
            for hh in 0..h {
                let qv = &q[(i * h + hh) * d..(i * h + hh + 1) * d];
                let vis: Vec<usize> = (0..t)
                    .filter(|&j| shape.half_window.is_none_or(|w| i.abs_diff(j) <= w))
                    .collect();
                let sc: Vec<f64> = vis
                    .iter()
                    .map(|&j| {
                        qv.iter()
                            .zip(&k[j * d..(j + 1) * d])
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum::<f64>()
                            * f64::from(shape.scale)
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = sc.iter().map(|&x| (x - m).exp()).collect();
                let z: f64 = e.iter().sum();
                for (&j, &ej) in vis.iter().zip(&e) {
                    for c in 0..d {
                        out[(i * h + hh) * d + c] += ej / z * f64::from(v[j * d + c]);
                    }
                }
            }
        }
        out
    }

    fn run(shape: &AttnShape, t: usize) {
        for kernels in Kernels::all_supported() {
            run_on(kernels, shape, t);
        }
    }

    fn run_on(kernels: &Kernels, shape: &AttnShape, t: usize) {
        let (h, d) = (shape.n_head, shape.head_dim);
        let q = data(t * h * d, 1 + t as u32);
        let k = data(t * d, 2 + t as u32);
        let v = data(t * d, 3 + t as u32);
        let want = reference(shape, &q, &k, &v, t);
        let mut out = q.clone();
        let mut scores = vec![f32::NAN; scores_len(shape, t)];
        for (b, blk) in out.chunks_mut(QUERY_BLOCK * h * d).enumerate() {
            attend_block(
                kernels,
                &mut GemmScratch::new(),
                shape,
                blk,
                &k,
                &v,
                t,
                b,
                &mut scores,
            );
        }
        for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() < ATTN_ABS_TOL,
                "{:?} t={t} i={i} got {g} want {w}",
                kernels.isa()
            );
        }
    }

    #[test]
    fn full_attention_matches_reference() {
        let shape = AttnShape {
            n_head: 3,
            head_dim: 16,
            half_window: None,
            scale: 0.25,
        };
        for t in [1, 2, 9, 31, 32, 33, 70] {
            run(&shape, t);
        }
    }

    #[test]
    fn sliding_window_matches_reference() {
        // A window smaller than a block and one larger, so spans start and end mid-block.
        for w in [3, 40] {
            let shape = AttnShape {
                n_head: 3,
                head_dim: 8,
                half_window: Some(w),
                scale: 0.5,
            };
            for t in [1, 5, 32, 33, 100, 130] {
                run(&shape, t);
            }
        }
    }

    #[test]
    fn window_larger_than_text_equals_full() {
        let t = 50;
        let full = AttnShape {
            n_head: 3,
            head_dim: 8,
            half_window: None,
            scale: 0.3,
        };
        let slid = AttnShape {
            half_window: Some(t),
            ..full
        };
        let q = data(t * 24, 5);
        let k = data(t * 8, 6);
        let v = data(t * 8, 7);
        let mut a = q.clone();
        let mut b = q.clone();
        let mut scores = vec![0.0; scores_len(&full, t)];
        for (blk, (ra, rb)) in a
            .chunks_mut(QUERY_BLOCK * 24)
            .zip(b.chunks_mut(QUERY_BLOCK * 24))
            .enumerate()
        {
            let mut g = GemmScratch::new();
            attend_block(
                Kernels::get(),
                &mut g,
                &full,
                ra,
                &k,
                &v,
                t,
                blk,
                &mut scores,
            );
            attend_block(
                Kernels::get(),
                &mut g,
                &slid,
                rb,
                &k,
                &v,
                t,
                blk,
                &mut scores,
            );
        }
        assert_eq!(a, b);
    }

    #[test]
    fn softmax_zeroes_outside_span_and_sums_to_one() {
        let mut row = vec![3.0f32, 1.0, 2.0, 100.0, -5.0];
        softmax_span(&mut row, 1, 4, 1.0);
        assert_eq!(row[0], 0.0);
        assert_eq!(row[4], 0.0);
        let s: f32 = row.iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!(row[3] > 0.99);
    }
}
