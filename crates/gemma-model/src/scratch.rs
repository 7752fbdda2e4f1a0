//! Per-worker working memory for the forward pass, sized once and reused.

use std::sync::Mutex;

use quant_kernels::{F32PackBuf, GemmScratch};

use crate::attention::{self, AttnShape};
use crate::model::GemmaModel;

/// Texts whose pooled vectors go through the Dense head together. The head's buffers are this
/// many rows whatever the batch size, and results do not depend on it (GEMM rows are
/// independent).
pub(crate) const HEAD_CHUNK: usize = 32;

/// Working memory of one worker: activations for a token budget, attention scores, the Dense
/// head's rows and the GEMM's packing buffers.
///
/// Create one per worker with [`ModelScratch::new`] and pass it to every call; after the first
/// call of a given shape nothing is allocated. A batch with more tokens than the budget is
/// processed in consecutive groups of texts; a single text longer than the budget grows the
/// buffers once.
#[derive(Debug)]
pub struct ModelScratch {
    pub(crate) tokens: usize,
    /// Residual stream, `tokens × d`.
    pub(crate) x: Vec<f32>,
    /// Normalised input of a projection, then its output, `tokens × d`.
    pub(crate) h: Vec<f32>,
    /// Queries, then (in place) the attention output, `tokens × q_dim`.
    pub(crate) q: Vec<f32>,
    /// Keys, `tokens × key_length`.
    pub(crate) k: Vec<f32>,
    /// Values, `tokens × value_length`.
    pub(crate) v: Vec<f32>,
    /// The keys and values of the group's multi-block texts, packed once per layer for every
    /// query block of their text (see `attention::PackTasks`).
    pub(crate) k_packed: F32PackBuf,
    pub(crate) v_packed: F32PackBuf,
    /// Gate projection, then `gelu(gate)·up`, `tokens × ff`.
    pub(crate) gate: Vec<f32>,
    /// Up projection, `tokens × ff`.
    pub(crate) up: Vec<f32>,
    /// One attention workspace per thread of the caller's parallel-for.
    pub(crate) attn: Mutex<Vec<AttnWork>>,
    /// Scores each workspace holds (one query block against the longest text).
    pub(crate) scores_len: usize,
    /// Workspaces created so far (the pool's size when no task holds one).
    pub(crate) attn_workers: usize,
    /// Head width the attention workspaces are sized for.
    pub(crate) head_dim: usize,
    /// Start of each text of the current group in the token rows, plus the end.
    pub(crate) offsets: Vec<usize>,
    /// Pooled vectors, `HEAD_CHUNK × d`.
    pub(crate) pooled: Vec<f32>,
    /// Dense 2 output, `HEAD_CHUNK × dense_hidden`.
    pub(crate) dense_mid: Vec<f32>,
    /// Pooling accumulator.
    pub(crate) acc: Vec<f64>,
    pub(crate) gemm: GemmScratch,
}

impl ModelScratch {
    /// Scratch for batches of up to `max_tokens` tokens in total (at least one token).
    pub fn new(model: &GemmaModel, max_tokens: usize) -> ModelScratch {
        let mut s = ModelScratch {
            tokens: 0,
            x: Vec::new(),
            h: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            k_packed: F32PackBuf::new(),
            v_packed: F32PackBuf::new(),
            gate: Vec::new(),
            up: Vec::new(),
            attn: Mutex::new(Vec::new()),
            scores_len: 0,
            attn_workers: 0,
            head_dim: 0,
            offsets: Vec::with_capacity(HEAD_CHUNK + 1),
            pooled: Vec::new(),
            dense_mid: Vec::new(),
            acc: Vec::new(),
            gemm: GemmScratch::new(),
        };
        s.ensure(model, max_tokens.max(1));
        s
    }

    /// The token budget.
    pub fn max_tokens(&self) -> usize {
        self.tokens
    }

    /// Grows the buffers to hold `tokens` tokens (never shrinks).
    pub(crate) fn ensure(&mut self, model: &GemmaModel, tokens: usize) {
        if tokens <= self.tokens {
            return;
        }
        let c = model.config();
        let d = c.embedding_length;
        let longest = tokens.min(c.context_length);
        let shape = AttnShape {
            n_head: c.head_count,
            head_dim: c.key_length,
            half_window: None,
            scale: c.attention_scale,
        };
        grow_zeroed(&mut self.x, tokens * d);
        grow_zeroed(&mut self.h, tokens * d);
        grow_zeroed(&mut self.q, tokens * c.q_dim());
        grow_zeroed(&mut self.k, tokens * c.key_length);
        grow_zeroed(&mut self.v, tokens * c.value_length);
        let (kl, vl) = attention::shared_kv_len(c.key_length, tokens);
        self.k_packed.reserve(kl);
        self.v_packed.reserve(vl);
        grow_zeroed(&mut self.gate, tokens * c.feed_forward_length);
        grow_zeroed(&mut self.up, tokens * c.feed_forward_length);
        self.scores_len = attention::scores_len(&shape, longest);
        self.head_dim = c.key_length;
        let pool = self.attn.get_mut().unwrap_or_else(|p| p.into_inner());
        for w in pool.iter_mut() {
            w.reserve(self.scores_len, c.key_length);
        }
        // Sized for the largest shapes up front: which texts share a group can depend on
        // scheduling, and a buffer growing mid-stream would be an allocation in the steady state.
        self.gemm
            .reserve_activations(tokens, model.widest_token_k());
        self.gemm
            .reserve_activations(HEAD_CHUNK, model.widest_head_k());
        self.pooled.resize(HEAD_CHUNK * d, 0.0);
        self.dense_mid.resize(HEAD_CHUNK * c.dense_hidden, 0.0);
        self.acc.resize(d, 0.0);
        self.tokens = tokens;
    }
}

/// Working memory of one attention task: a block's scores, and the keys and values of a
/// single-block text, which its one block packs itself.
#[derive(Debug)]
pub(crate) struct AttnWork {
    pub scores: Vec<f32>,
    pub k_packed: F32PackBuf,
    pub v_packed: F32PackBuf,
}

impl AttnWork {
    /// A workspace for blocks of up to `scores_len` scores with heads of `head_dim` values.
    pub(crate) fn new(scores_len: usize, head_dim: usize) -> AttnWork {
        let mut w = AttnWork {
            scores: Vec::new(),
            k_packed: F32PackBuf::new(),
            v_packed: F32PackBuf::new(),
        };
        w.reserve(scores_len, head_dim);
        w
    }

    pub(crate) fn reserve(&mut self, scores_len: usize, head_dim: usize) {
        grow_zeroed(&mut self.scores, scores_len);
        let (kl, vl) = attention::text_kv_len(head_dim, attention::QUERY_BLOCK);
        self.k_packed.reserve(kl);
        self.v_packed.reserve(vl);
    }
}

impl ModelScratch {
    /// Makes sure the attention pool holds a workspace for each of `threads` threads.
    pub(crate) fn ensure_workers(&mut self, threads: usize) {
        let pool = self.attn.get_mut().unwrap_or_else(|p| p.into_inner());
        while self.attn_workers < threads.max(1) {
            pool.push(AttnWork::new(self.scores_len, self.head_dim));
            self.attn_workers += 1;
        }
    }
}

/// Grows a scratch buffer to `n` values. A fresh zeroed allocation rather than `resize`: the
/// allocator hands large zeroed blocks out as untouched pages, so a buffer sized for the token
/// budget costs page faults only where a call writes (a short text touches a few pages of the
/// budget's tens of megabytes; `resize` would write every page on the first call). Contents are
/// scratch, always written before they are read.
fn grow_zeroed(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        *v = vec![0.0; n];
    }
}
