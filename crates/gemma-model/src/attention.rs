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

use std::ops::Range;

use quant_kernels::{
    F32PackBuf, F32Panels, Kernels, Serial, gemm_f32_prepacked, pack_f32_nn_panels,
    pack_f32_nt_rows,
};

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

/// One text's keys and values, packed once for every query block of the text: keys as the
/// right-hand operand of `S = Q·Kᵀ` (`t` columns × `head_dim`), values as that of `O = P·V`
/// (`head_dim` columns × `t`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TextKv<'a> {
    pub k: F32Panels<'a>,
    pub v: F32Panels<'a>,
}

/// Whether a text of `t` tokens has its keys and values packed into the group's shared buffers
/// before its blocks run. A text of one block is packed by that block's own task instead: the
/// same single packing, without padding a shared buffer to a panel per short text.
pub(crate) fn packs_shared(t: usize) -> bool {
    t > QUERY_BLOCK
}

/// Packed lengths of one text's keys and values.
pub(crate) fn text_kv_len(head_dim: usize, t: usize) -> (usize, usize) {
    (
        F32PackBuf::packed_len(t, head_dim),
        F32PackBuf::packed_len(head_dim, t),
    )
}

/// Shared packed key and value lengths enough for any group of `tokens` tokens: only texts of
/// more than [`QUERY_BLOCK`] tokens are packed there, each padded by fewer than a panel of keys.
pub(crate) fn shared_kv_len(head_dim: usize, tokens: usize) -> (usize, usize) {
    let texts = tokens / (QUERY_BLOCK + 1);
    let keys = tokens + texts * (F32PackBuf::PANEL - 1);
    (
        F32PackBuf::packed_len(keys, head_dim),
        F32PackBuf::packed_len(head_dim, tokens),
    )
}

/// Packs one text's keys and values (`t × head_dim` rows each) into `k_out` and `v_out`, sized
/// by [`text_kv_len`].
pub(crate) fn pack_text(
    k: &[f32],
    v: &[f32],
    t: usize,
    head_dim: usize,
    k_out: &mut [f32],
    v_out: &mut [f32],
) {
    PackTask::Keys {
        rows: k,
        n: t,
        out: k_out,
    }
    .run(head_dim);
    PackTask::Values {
        v,
        t,
        panels: 0..head_dim.div_ceil(F32PackBuf::PANEL),
        out: v_out,
    }
    .run(head_dim);
}

/// Packed values per pack task: big enough that handing a task out costs little next to it,
/// small enough that a long text's packing spreads over the threads.
const PACK_TASK_VALUES: usize = 16 * 1024;

/// A part of one text's packing: consecutive whole panels of its keys or of its values.
pub(crate) enum PackTask<'a> {
    /// `n` key rows, packed into whole panels.
    Keys {
        rows: &'a [f32],
        n: usize,
        out: &'a mut [f32],
    },
    /// Panels `panels` of the text's `t` value rows.
    Values {
        v: &'a [f32],
        t: usize,
        panels: Range<usize>,
        out: &'a mut [f32],
    },
}

impl PackTask<'_> {
    pub(crate) fn run(self, head_dim: usize) {
        let r = match self {
            PackTask::Keys { rows, n, out } => pack_f32_nt_rows(out, rows, n, head_dim),
            PackTask::Values { v, t, panels, out } => {
                pack_f32_nn_panels(out, v, t, head_dim, panels)
            }
        };
        if let Err(e) = r {
            unreachable!("pack tasks are cut from the texts' own shapes: {e}");
        }
    }
}

/// The pack tasks of every multi-block text of a group, cutting the shared buffers into disjoint
/// parts in text order: text by text, its keys in runs of panels, then its value panels.
pub(crate) struct PackTasks<'a> {
    k: &'a [f32],
    v: &'a [f32],
    offsets: &'a [usize],
    head_dim: usize,
    k_out: &'a mut [f32],
    v_out: &'a mut [f32],
    text: usize,
    /// Next key (keys phase) or value panel (values phase) of the current text.
    pos: usize,
    values: bool,
    remaining: usize,
}

impl<'a> PackTasks<'a> {
    /// Tasks packing the group's texts (`offsets`: each text's first row, then the end) from
    /// their key and value rows into `k_out` / `v_out`, at the offsets [`TextKvOffsets`] gives.
    pub(crate) fn new(
        k: &'a [f32],
        v: &'a [f32],
        offsets: &'a [usize],
        head_dim: usize,
        k_out: &'a mut [f32],
        v_out: &'a mut [f32],
    ) -> PackTasks<'a> {
        let remaining = offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .filter(|&t| packs_shared(t))
            .map(|t| {
                let (kc, pc) = pack_chunks(head_dim, t);
                t.div_ceil(kc) + head_dim.div_ceil(F32PackBuf::PANEL).div_ceil(pc)
            })
            .sum();
        PackTasks {
            k,
            v,
            offsets,
            head_dim,
            k_out,
            v_out,
            text: 0,
            pos: 0,
            values: false,
            remaining,
        }
    }
}

/// Keys per key task and value panels per value task for a text of `t` tokens.
fn pack_chunks(head_dim: usize, t: usize) -> (usize, usize) {
    let p = F32PackBuf::PANEL;
    let keys = (PACK_TASK_VALUES / head_dim.max(1) / p).max(1) * p;
    let panels = (PACK_TASK_VALUES / (p * t.max(1))).max(1);
    (keys, panels)
}

impl<'a> Iterator for PackTasks<'a> {
    type Item = PackTask<'a>;

    fn next(&mut self) -> Option<PackTask<'a>> {
        let hd = self.head_dim;
        loop {
            let (t0, t1) = (
                *self.offsets.get(self.text)?,
                *self.offsets.get(self.text + 1)?,
            );
            let t = t1 - t0;
            if !packs_shared(t) {
                self.text += 1;
                continue;
            }
            let (kc, pc) = pack_chunks(hd, t);
            self.remaining -= 1;
            if !self.values {
                let (a, b) = (self.pos, (self.pos + kc).min(t));
                let len = F32PackBuf::packed_len(b - a, hd);
                let (out, rest) = std::mem::take(&mut self.k_out).split_at_mut(len);
                self.k_out = rest;
                self.pos = b;
                if b == t {
                    self.values = true;
                    self.pos = 0;
                }
                return Some(PackTask::Keys {
                    rows: &self.k[(t0 + a) * hd..(t0 + b) * hd],
                    n: b - a,
                    out,
                });
            }
            let np = hd.div_ceil(F32PackBuf::PANEL);
            let (a, b) = (self.pos, (self.pos + pc).min(np));
            let len = (b - a) * F32PackBuf::PANEL * t;
            let (out, rest) = std::mem::take(&mut self.v_out).split_at_mut(len);
            self.v_out = rest;
            self.pos = b;
            if b == np {
                self.values = false;
                self.pos = 0;
                self.text += 1;
            }
            return Some(PackTask::Values {
                v: &self.v[t0 * hd..t1 * hd],
                t,
                panels: a..b,
                out,
            });
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for PackTasks<'_> {}

/// Where each multi-block text's packed keys and values start in the shared buffers, text by
/// text in the order [`PackTasks`] fills them; `None` for a text its block packs itself.
pub(crate) struct TextKvOffsets {
    head_dim: usize,
    next: (usize, usize),
}

impl TextKvOffsets {
    pub(crate) fn new(head_dim: usize) -> TextKvOffsets {
        TextKvOffsets {
            head_dim,
            next: (0, 0),
        }
    }

    /// The offsets of the next text, of `t` tokens.
    pub(crate) fn next_text(&mut self, t: usize) -> Option<(usize, usize)> {
        if !packs_shared(t) {
            return None;
        }
        let at = self.next;
        let (kl, vl) = text_kv_len(self.head_dim, t);
        self.next = (at.0 + kl, at.1 + vl);
        Some(at)
    }
}

/// Attention of query block `block` of one text, or of its rows from `first` on, in place.
///
/// `q_block` holds the query rows (`rows × n_head·head_dim`, token `block·QUERY_BLOCK + first`
/// onwards, within the block) and receives their output rows; every row gets the same bits
/// whichever part of its block it is computed with, as the scores span the block's keys. `kv`
/// is the whole text's keys and values, packed. `scores` must hold at least [`scores_len`]
/// floats for this text's length. Scores are computed from the visible span's
/// first key rounded down to a panel (a packed operand's columns start on a panel; the extra
/// columns are never read): on return `scores` holds `rows·n_head` rows of
/// `width` probabilities, column 0 being key `first`, and `(first, width)` is returned.
pub(crate) fn attend_block(
    kernels: &Kernels,
    shape: &AttnShape,
    q_block: &mut [f32],
    kv: TextKv<'_>,
    t: usize,
    (block, first): (usize, usize),
    scores: &mut [f32],
) -> (usize, usize) {
    let d = shape.head_dim;
    let h = shape.n_head;
    let i0 = block * QUERY_BLOCK + first;
    let (j0, j1) = key_span(shape, t, block);
    let jf = j0 - j0 % F32PackBuf::PANEL;
    let n = j1 - jf;
    let rows = q_block.len() / d;
    let s = &mut scores[..rows * n];
    if let Err(e) = gemm_f32_prepacked(kernels, q_block, rows, d, kv.k, jf..j1, 0..d, s, &Serial) {
        unreachable!("attention operands are sized from the block: {e}");
    }
    kernels.vectorize(|| {
        for (r, row) in s.chunks_exact_mut(n).enumerate() {
            let i = i0 + r / h;
            let (lo, hi) = match shape.half_window {
                Some(w) => (i.saturating_sub(w).max(j0), (i + w + 1).min(j1)),
                None => (j0, j1),
            };
            softmax_span(row, lo - jf, hi - jf, shape.scale);
        }
    });
    // P·V over exactly the visible span: A starts at key j0 inside each score row, so the
    // reduction is the one over [j0, j1) that an unpadded span would give.
    let p = &s[j0 - jf..];
    if let Err(e) = gemm_f32_prepacked(kernels, p, rows, n, kv.v, 0..d, j0..j1, q_block, &Serial) {
        unreachable!("attention operands are sized from the block: {e}");
    }
    (jf, n)
}

/// The probabilities of the keys a block can see (`[j0, j1)` of [`key_span`]), compacted in
/// place from the `(first, width)` layout [`attend_block`] leaves, for traces.
pub(crate) fn visible_probs(
    scores: &mut [f32],
    rows: usize,
    (first, width): (usize, usize),
    (j0, j1): (usize, usize),
) -> &[f32] {
    let n = j1 - j0;
    for r in 0..rows {
        let src = r * width + (j0 - first);
        scores.copy_within(src..src + n, r * n);
    }
    &scores[..rows * n]
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

    /// One text's keys and values packed into their own buffers.
    fn packed(k: &[f32], v: &[f32], t: usize, d: usize) -> (F32PackBuf, F32PackBuf) {
        let (kl, vl) = text_kv_len(d, t);
        let (mut kp, mut vp) = (F32PackBuf::new(), F32PackBuf::new());
        kp.reserve(kl);
        vp.reserve(vl);
        pack_text(
            k,
            v,
            t,
            d,
            &mut kp.as_mut_slice()[..kl],
            &mut vp.as_mut_slice()[..vl],
        );
        (kp, vp)
    }

    fn kv<'a>(kp: &'a F32PackBuf, vp: &'a F32PackBuf, t: usize, d: usize) -> TextKv<'a> {
        TextKv {
            k: kp.panels(0, t, d).unwrap(),
            v: vp.panels(0, d, t).unwrap(),
        }
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
        let (kp, vp) = packed(&k, &v, t, d);
        for (b, blk) in out.chunks_mut(QUERY_BLOCK * h * d).enumerate() {
            attend_block(kernels, shape, blk, kv(&kp, &vp, t, d), t, (b, 0), &mut scores);
        }
        for (i, (&g, &w)) in out.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() < ATTN_ABS_TOL,
                "{:?} t={t} i={i} got {g} want {w}",
                kernels.isa()
            );
        }
        // A block's rows computed in parts (as when a short batch splits its blocks over
        // threads) get the bits of the whole block.
        for part in [1, 5, 16] {
            let mut parts = q.clone();
            for (b, blk) in parts.chunks_mut(QUERY_BLOCK * h * d).enumerate() {
                for (p, rows) in blk.chunks_mut(part * h * d).enumerate() {
                    attend_block(kernels, shape, rows, kv(&kp, &vp, t, d), t, (b, p * part), &mut scores);
                }
            }
            let same = parts.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{:?} t={t}: parts of {part} rows differ", kernels.isa());
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
        let (kp, vp) = packed(&k, &v, t, 8);
        for (blk, (ra, rb)) in a
            .chunks_mut(QUERY_BLOCK * 24)
            .zip(b.chunks_mut(QUERY_BLOCK * 24))
            .enumerate()
        {
            let kv = kv(&kp, &vp, t, 8);
            attend_block(Kernels::get(), &full, ra, kv, t, (blk, 0), &mut scores);
            attend_block(Kernels::get(), &slid, rb, kv, t, (blk, 0), &mut scores);
        }
        assert_eq!(a, b);
    }

    /// The shared buffers the pack tasks fill hold, at the offsets `TextKvOffsets` gives, each
    /// multi-block text packed on its own, whatever order the tasks run in; short texts take
    /// no room.
    #[test]
    fn pack_tasks_fill_each_text_at_its_offsets() {
        let d = 256;
        let lens = [5, 33, 2048 / 4, 32, 100, 1];
        let mut offsets = vec![0];
        for t in lens {
            offsets.push(offsets.last().unwrap() + t);
        }
        let total = *offsets.last().unwrap();
        let k = data(total * d, 11);
        let v = data(total * d, 12);
        let (kl, vl) = shared_kv_len(d, total);
        let (mut kp, mut vp) = (vec![f32::NAN; kl], vec![f32::NAN; vl]);
        let tasks = PackTasks::new(&k, &v, &offsets, d, &mut kp, &mut vp);
        let n = tasks.len();
        let mut all: Vec<PackTask<'_>> = tasks.collect();
        assert_eq!(all.len(), n);
        all.reverse();
        for task in all {
            task.run(d);
        }
        let mut at = TextKvOffsets::new(d);
        for w in offsets.windows(2) {
            let t = w[1] - w[0];
            let Some((ko, vo)) = at.next_text(t) else {
                assert!(!packs_shared(t));
                continue;
            };
            let (mut want_k, mut want_v) =
                packed(&k[w[0] * d..w[1] * d], &v[w[0] * d..w[1] * d], t, d);
            let (tkl, tvl) = text_kv_len(d, t);
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(
                same(&kp[ko..ko + tkl], &want_k.as_mut_slice()[..tkl]),
                "keys t={t}"
            );
            assert!(
                same(&vp[vo..vo + tvl], &want_v.as_mut_slice()[..tvl]),
                "values t={t}"
            );
        }
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
