//! The forward pass over a group of texts whose tokens fit the scratch budget.
//!
//! All tokens of all texts are rows of one activation matrix, so each weight is applied in one
//! GEMM per layer; only attention and pooling look at text boundaries. Every per-row operation
//! (norms, RoPE, GELU) reads only its own row, attention reads only its own text, pooling sums
//! a text's rows in order, and the GEMM's rows are independent of each other: a text's vector
//! is the same bit for bit whatever else is in the batch.

use std::sync::Mutex;

use quant_kernels::{F32PackBuf, ParallelFor, RowPrologue};

use crate::activation::gelu_tanh_mul;
use crate::attention::{self, AttnShape, PackTasks, TextKv, TextKvOffsets};
use crate::config::LayerKind;
use crate::linear::{Exec, Linear};
use crate::model::{GemmaModel, Layer};
use crate::norm::{rms_norm_add, rms_norm_in_place, rms_norm_into};
use crate::pooling::{l2_normalize, mean_rows};
use crate::scratch::{AttnWork, HEAD_CHUNK, ModelScratch};
use crate::trace::{MaybeTrace, TracePoint};

/// Runs `texts` (all non-empty, valid ids, total tokens within the scratch budget) and writes
/// one unit-length embedding per text to `out`. Returns false, with `out` unfinished, when
/// `stop` said so before a layer.
pub(crate) fn forward_group<T: MaybeTrace>(
    model: &GemmaModel,
    texts: &[&[u32]],
    s: &mut ModelScratch,
    par: &dyn ParallelFor,
    out: &mut [f32],
    tr: &mut T,
    stop: &dyn Fn() -> bool,
) -> bool {
    let c = model.config();
    let d = c.embedding_length;
    s.offsets.clear();
    let mut total = 0;
    for t in texts {
        s.offsets.push(total);
        total += t.len();
    }
    s.offsets.push(total);
    let m = total;

    let ModelScratch {
        x,
        h,
        q,
        k,
        v,
        k_packed,
        v_packed,
        gate,
        up,
        attn,
        scores_len,
        offsets,
        pooled,
        dense_mid,
        acc,
        gemm,
        ..
    } = s;
    let mut exec = Exec { par, gemm };

    // Token embeddings, scaled by sqrt(d) in f32 as the reference does.
    let scale = (d as f32).sqrt();
    let kernels = model.kernels();
    kernels.vectorize(|| {
        for (row, &id) in x[..m * d]
            .chunks_exact_mut(d)
            .zip(texts.iter().flat_map(|t| t.iter()))
        {
            model.embedding.row(id, row);
            for v in row.iter_mut() {
                *v *= scale;
            }
        }
    });
    tr.record(TracePoint::Embedding, &x[..m * d]);

    let bufs = LayerBufs {
        m,
        x: &mut x[..m * d],
        h: &mut h[..m * d],
        q: &mut q[..m * c.q_dim()],
        k: &mut k[..m * c.key_length],
        v: &mut v[..m * c.value_length],
        k_packed,
        v_packed,
        gate: &mut gate[..m * c.feed_forward_length],
        up: &mut up[..m * c.feed_forward_length],
        attn,
        scores_len: *scores_len,
        offsets,
    };
    let mut bufs = bufs;
    let mut prev = None;
    for (l, layer) in model.layers.iter().enumerate() {
        if stop() {
            return false;
        }
        layer_forward(model, l, layer, prev, &mut bufs, &mut exec, tr);
        prev = Some(layer);
    }

    // The last layer's residual add, which for the others is the next layer's first step.
    let x = &mut x[..m * d];
    let eps = c.rms_norm_eps;
    if let Some(last) = prev {
        kernels.vectorize(|| {
            for (hr, xr) in h[..m * d].chunks_exact(d).zip(x.chunks_exact_mut(d)) {
                rms_norm_add(hr, &last.post_ffw_norm, eps, xr);
            }
        });
        tr.record(TracePoint::LayerOut(model.layers.len() - 1), x);
    }
    kernels.vectorize(|| {
        for row in x.chunks_exact_mut(d) {
            rms_norm_in_place(row, &model.output_norm, eps);
        }
    });
    tr.record(TracePoint::FinalNorm, x);

    // Dense head, HEAD_CHUNK texts at a time.
    let dim = c.embedding_dim;
    let hidden = c.dense_hidden;
    for (chunk_idx, out_chunk) in out.chunks_mut(HEAD_CHUNK * dim).enumerate() {
        let n = out_chunk.len() / dim;
        let first = chunk_idx * HEAD_CHUNK;
        for i in 0..n {
            let (a, b) = (offsets[first + i], offsets[first + i + 1]);
            mean_rows(&x[a * d..b * d], d, &mut pooled[i * d..(i + 1) * d], acc);
        }
        tr.record(TracePoint::Pooled, &pooled[..n * d]);
        model
            .dense2
            .forward(&pooled[..n * d], n, &mut dense_mid[..n * hidden], &mut exec);
        tr.record(TracePoint::Dense2, &dense_mid[..n * hidden]);
        model
            .dense3
            .forward(&dense_mid[..n * hidden], n, out_chunk, &mut exec);
        tr.record(TracePoint::Dense3, out_chunk);
        for e in out_chunk.chunks_exact_mut(dim) {
            l2_normalize(e);
        }
        tr.record(TracePoint::Normalized, out_chunk);
    }
    true
}

/// The activation buffers of one group, cut to its token count.
struct LayerBufs<'a> {
    m: usize,
    x: &'a mut [f32],
    h: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    k_packed: &'a mut F32PackBuf,
    v_packed: &'a mut F32PackBuf,
    gate: &'a mut [f32],
    up: &'a mut [f32],
    attn: &'a Mutex<Vec<AttnWork>>,
    scores_len: usize,
    offsets: &'a [usize],
}

/// Layer `l`, starting with the end of layer `l - 1` (`prev`): its post-feed-forward norm and
/// residual add, which need the whole row of its down projection and so run as the first step of
/// the per-row work fused into this layer's Q/K/V matmul (see [`RowPrologue`]). The caller does
/// the last layer's.
fn layer_forward<T: MaybeTrace>(
    model: &GemmaModel,
    l: usize,
    layer: &Layer,
    prev: Option<&Layer>,
    b: &mut LayerBufs<'_>,
    exec: &mut Exec<'_>,
    tr: &mut T,
) {
    let c = model.config();
    let d = c.embedding_length;
    let eps = c.rms_norm_eps;
    let hd = c.key_length;
    let qd = c.q_dim();
    let m = b.m;
    // Per-row work runs inside `vectorize` so it gets the CPU's full vector width (same bits).
    let kernels = model.kernels();

    // Attention block. The per-row work between two matmuls runs in the second one's
    // activation quantization, spread over the threads (a serial step otherwise).
    let attn_rows = |_: usize, xr: &mut [f32], hr: &mut [f32]| {
        kernels.vectorize(|| {
            if let Some(p) = prev {
                rms_norm_add(hr, &p.post_ffw_norm, eps, xr);
            }
            rms_norm_into(xr, &layer.attn_norm, eps, hr);
        })
    };
    Linear::forward_many_with(
        [&layer.wq, &layer.wk, &layer.wv],
        RowPrologue {
            state: b.x,
            out: b.h,
            f: &attn_rows,
        },
        m,
        [&mut *b.q, &mut *b.k, &mut *b.v],
        exec,
    );
    if l > 0 {
        tr.record(TracePoint::LayerOut(l - 1), b.x);
    }
    tr.record(TracePoint::AttnNorm(l), b.h);
    tr.record(TracePoint::Q(l), b.q);
    tr.record(TracePoint::K(l), b.k);
    tr.record(TracePoint::V(l), b.v);

    let rope = match c.layer_kind(l) {
        LayerKind::Sliding => &model.rope_swa,
        LayerKind::Full => &model.rope_full,
    };
    if T::ON {
        // Traced runs split norm and rotation to observe both.
        norm_heads(b.q, hd, &layer.q_norm, eps);
        norm_heads(b.k, hd, &layer.k_norm, eps);
        tr.record(TracePoint::QNormed(l), b.q);
        tr.record(TracePoint::KNormed(l), b.k);
        rotate_rows(b.q, qd, b.offsets, rope);
        rotate_rows(b.k, hd, b.offsets, rope);
    } else {
        let per_task = exec.par.items_per_task(m);
        let chunks = b
            .q
            .chunks_mut(per_task * qd)
            .zip(b.k.chunks_mut(per_task * hd))
            .enumerate();
        let offsets = b.offsets;
        for_each_item(exec.par, chunks, |(i, (qc, kc))| {
            kernels.vectorize(|| {
                for (j, (qr, kr)) in qc.chunks_exact_mut(qd).zip(kc.chunks_exact_mut(hd)).enumerate() {
                    // The row's position in its text.
                    let r = i * per_task + j;
                    let p = r - offsets[offsets.partition_point(|&o| o <= r) - 1];
                    for head in qr.chunks_exact_mut(hd) {
                        rms_norm_in_place(head, &layer.q_norm, eps);
                    }
                    rms_norm_in_place(kr, &layer.k_norm, eps);
                    rope.rotate(qr, p);
                    rope.rotate(kr, p);
                }
            });
        });
    }
    tr.record(TracePoint::QRope(l), b.q);
    tr.record(TracePoint::KRope(l), b.k);

    let shape = AttnShape {
        n_head: c.head_count,
        head_dim: hd,
        half_window: match c.layer_kind(l) {
            LayerKind::Sliding => Some(c.half_window()),
            LayerKind::Full => None,
        },
        scale: c.attention_scale,
    };
    // Each multi-block text's keys and values are packed once, here, for all its blocks.
    {
        let tasks = PackTasks::new(
            b.k,
            b.v,
            b.offsets,
            hd,
            b.k_packed.as_mut_slice(),
            b.v_packed.as_mut_slice(),
        );
        if T::ON {
            tasks.for_each(|task| task.run(hd));
        } else {
            for_each_item(exec.par, tasks, |task| task.run(hd));
        }
    }
    let kv = SharedKv {
        k: b.k,
        v: b.v,
        k_packed: b.k_packed,
        v_packed: b.v_packed,
    };
    // Fewer blocks than threads (a short text alone, say): each block's rows are cut in parts
    // that run in parallel, each packing its text's keys and values for itself.
    let n_blocks = QueryBlocks::count(b.offsets, 1);
    let parts = if !T::ON && n_blocks < exec.par.num_threads() { exec.par.num_threads() } else { 1 };
    let blocks = QueryBlocks::new(b.q, b.offsets, qd, hd, parts);
    if T::ON {
        // Traced runs are serial and record each block's probabilities.
        let mut pool = b.attn.lock().unwrap_or_else(|p| p.into_inner());
        let Some(work) = pool.last_mut() else {
            unreachable!("the pool holds a workspace")
        };
        for item in blocks {
            let (t, blk, rows) = (item.t, item.block, item.q.len() / hd);
            let layout = attend_item(kernels, &shape, &kv, item, work);
            let span = attention::key_span(&shape, t, blk);
            let probs = attention::visible_probs(&mut work.scores, rows, layout, span);
            tr.record(
                TracePoint::AttnProbs {
                    layer: l,
                    block: blk,
                    first_key: span.0,
                },
                probs,
            );
        }
    } else {
        // Each block's task borrows a workspace from the pool: every block is computed the
        // same way whichever thread runs it.
        let (pool, scores_len, kv) = (b.attn, b.scores_len, &kv);
        for_each_item(exec.par, blocks, |item| {
            let taken = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            // A parallel-for running more tasks at once than it reports threads gets a
            // temporary workspace rather than an error.
            let mut work = taken.unwrap_or_else(|| AttnWork::new(scores_len, hd));
            attend_item(kernels, &shape, kv, item, &mut work);
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(work);
        });
    }
    tr.record(TracePoint::AttnOut(l), b.q);

    layer.wo.forward(b.q, m, b.h, exec);
    tr.record(TracePoint::OProj(l), b.h);
    if T::ON {
        for (hr, gr) in b.h.chunks_exact(d).zip(b.gate.chunks_exact_mut(d)) {
            rms_norm_into(hr, &layer.post_attn_norm, eps, gr);
        }
        tr.record(TracePoint::PostAttnNorm(l), &b.gate[..m * d]);
    }

    // Feed-forward block, after the attention's post-norm and residual add.
    let ffn_rows = |_: usize, xr: &mut [f32], hr: &mut [f32]| {
        kernels.vectorize(|| {
            rms_norm_add(hr, &layer.post_attn_norm, eps, xr);
            rms_norm_into(xr, &layer.ffn_norm, eps, hr);
        })
    };
    Linear::forward_many_with(
        [&layer.gate, &layer.up],
        RowPrologue {
            state: b.x,
            out: b.h,
            f: &ffn_rows,
        },
        m,
        [&mut *b.gate, &mut *b.up],
        exec,
    );
    tr.record(TracePoint::ResidualAfterAttn(l), b.x);
    tr.record(TracePoint::FfnNorm(l), b.h);
    tr.record(TracePoint::Gate(l), b.gate);
    tr.record(TracePoint::Up(l), b.up);
    let down_rows = |_: usize, ur: &mut [f32], gr: &mut [f32]| kernels.vectorize(|| gelu_tanh_mul(gr, ur));
    Linear::forward_many_with(
        [&layer.down],
        RowPrologue {
            state: b.up,
            out: b.gate,
            f: &down_rows,
        },
        m,
        [&mut *b.h],
        exec,
    );
    tr.record(TracePoint::DownIn(l), b.gate);
    tr.record(TracePoint::Down(l), b.h);
    if T::ON {
        for (hr, ur) in b.h.chunks_exact(d).zip(b.up.chunks_exact_mut(d)) {
            rms_norm_into(hr, &layer.post_ffw_norm, eps, ur);
        }
        tr.record(TracePoint::PostFfwNorm(l), &b.up[..m * d]);
    }
}

/// Calls `f` on every item over `par`, one item per task, handed out in order through a lock:
/// the items are disjoint mutable borrows, so any thread may take any, and each is computed the
/// same way whichever thread takes it.
fn for_each_item<I>(par: &dyn ParallelFor, items: I, f: impl Fn(I::Item) + Sync)
where
    I: ExactSizeIterator + Send,
{
    let n = items.len();
    let items = Mutex::new(items);
    par.run(n, &|_| {
        let item = items.lock().unwrap_or_else(|p| p.into_inner()).next();
        if let Some(item) = item {
            f(item);
        }
    });
}

/// The group's key and value rows, and the multi-block texts' packed keys and values.
struct SharedKv<'a> {
    k: &'a [f32],
    v: &'a [f32],
    k_packed: &'a F32PackBuf,
    v_packed: &'a F32PackBuf,
}

/// Attention of one query block against its own text's keys and values: the shared packed ones
/// for a multi-block text, else packed here into the workspace. Returns the scores' layout
/// (see [`attention::attend_block`]).
fn attend_item(
    kernels: &quant_kernels::Kernels,
    shape: &AttnShape,
    kv: &SharedKv<'_>,
    item: BlockItem<'_>,
    work: &mut AttnWork,
) -> (usize, usize) {
    let hd = shape.head_dim;
    let t = item.t;
    let operands = match item.packed {
        Some((ko, vo)) => kv.k_packed.panels(ko, t, hd).and_then(|k| {
            let v = kv.v_packed.panels(vo, hd, t)?;
            Ok(TextKv { k, v })
        }),
        None => {
            let text = item.t0 * hd..(item.t0 + t) * hd;
            let (kl, vl) = attention::text_kv_len(hd, t);
            work.k_packed.reserve(kl);
            work.v_packed.reserve(vl);
            attention::pack_text(
                &kv.k[text.clone()],
                &kv.v[text],
                t,
                hd,
                &mut work.k_packed.as_mut_slice()[..kl],
                &mut work.v_packed.as_mut_slice()[..vl],
            );
            work.k_packed.panels(0, t, hd).and_then(|k| {
                let v = work.v_packed.panels(0, hd, t)?;
                Ok(TextKv { k, v })
            })
        }
    };
    let operands = match operands {
        Ok(o) => o,
        Err(e) => unreachable!("packed keys and values are sized from the group: {e}"),
    };
    attention::attend_block(
        kernels,
        shape,
        item.q,
        operands,
        t,
        (item.block, item.first),
        &mut work.scores,
    )
}

fn norm_heads(rows: &mut [f32], hd: usize, w: &[f32], eps: f32) {
    for head in rows.chunks_exact_mut(hd) {
        rms_norm_in_place(head, w, eps);
    }
}

fn rotate_rows(rows: &mut [f32], width: usize, offsets: &[usize], rope: &crate::rope::RopeTable) {
    for w in offsets.windows(2) {
        for (p, r) in rows[w[0] * width..w[1] * width]
            .chunks_exact_mut(width)
            .enumerate()
        {
            rope.rotate(r, p);
        }
    }
}

/// One query block, or part of one: its text's first row and length, its index in the text,
/// its first row within the block, its rows, and where its text's keys and values are packed
/// in the shared buffers (`None`: a single-block text, packed by the item).
struct BlockItem<'a> {
    t0: usize,
    t: usize,
    block: usize,
    first: usize,
    q: &'a mut [f32],
    packed: Option<(usize, usize)>,
}

/// The query blocks of every text in the group, each cut in up to `parts` parts, as disjoint
/// mutable row ranges.
struct QueryBlocks<'a> {
    rest: &'a mut [f32],
    offsets: &'a [usize],
    width: usize,
    parts: usize,
    text: usize,
    block: usize,
    /// Row within the block where the next item starts.
    row: usize,
    packed_at: TextKvOffsets,
    packed: Option<(usize, usize)>,
    remaining: usize,
}

impl<'a> QueryBlocks<'a> {
    fn new(
        q: &'a mut [f32],
        offsets: &'a [usize],
        width: usize,
        head_dim: usize,
        parts: usize,
    ) -> QueryBlocks<'a> {
        QueryBlocks {
            rest: q,
            offsets,
            width,
            parts,
            text: 0,
            block: 0,
            row: 0,
            packed_at: TextKvOffsets::new(head_dim),
            packed: None,
            remaining: Self::count(offsets, parts),
        }
    }

    /// Rows per part of a block of `rows` rows.
    fn part_rows(rows: usize, parts: usize) -> usize {
        rows.div_ceil(parts.max(1))
    }

    /// Items the texts at `offsets` give with blocks cut in `parts` parts.
    fn count(offsets: &[usize], parts: usize) -> usize {
        let mut n = 0;
        for w in offsets.windows(2) {
            let t = w[1] - w[0];
            for first in (0..t).step_by(attention::QUERY_BLOCK) {
                let rows = attention::QUERY_BLOCK.min(t - first);
                n += rows.div_ceil(Self::part_rows(rows, parts));
            }
        }
        n
    }
}

impl<'a> Iterator for QueryBlocks<'a> {
    type Item = BlockItem<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let (t0, t1) = (
            *self.offsets.get(self.text)?,
            *self.offsets.get(self.text + 1)?,
        );
        let t = t1 - t0;
        if self.block == 0 && self.row == 0 {
            self.packed = self.packed_at.next_text(t);
        }
        let first = self.block * attention::QUERY_BLOCK;
        let block_rows = attention::QUERY_BLOCK.min(t - first);
        let rows = Self::part_rows(block_rows, self.parts).min(block_rows - self.row);
        let rest = std::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(rows * self.width);
        self.rest = tail;
        let item = BlockItem {
            t0,
            t,
            block: self.block,
            first: self.row,
            q: head,
            packed: self.packed,
        };
        self.row += rows;
        if self.row == block_rows {
            self.row = 0;
            if first + block_rows == t {
                self.text += 1;
                self.block = 0;
            } else {
                self.block += 1;
            }
        }
        self.remaining -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for QueryBlocks<'_> {}
