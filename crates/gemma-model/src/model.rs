//! The loaded model: hyper-parameters, typed weights bound to the GGUF file, RoPE tables.

use std::path::Path;
use std::sync::Arc;

use gguf_format::{GgufError, GgufFile, TensorView};
use quant_kernels::{Isa, Kernels, Outliers, PackedMatrix, ParallelFor, QuantType, WeightSlot};

use crate::config::ModelConfig;
use crate::error::{InputError, ModelError};
use crate::forward::forward_group;
use crate::linear::{Linear, TokenEmbedding};
use crate::rope::RopeTable;
use crate::scratch::ModelScratch;
use crate::trace::{NoTrace, On, Tracer};

/// Which arithmetic the matrix products use; chosen at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NumericPath {
    /// Weights dequantized to `f32` once at load, `f32` GEMM: the accuracy reference. Holds
    /// every matrix as `f32` (about 1.2 GB for this model besides the embedding table).
    F32,
    /// Weights kept in their file format; activations quantized per block to the format's
    /// partner (Q8_0, Q8_1 or Q8_K) and multiplied with integer dot products, as llama.cpp does.
    #[default]
    Quantized,
}

/// How activations are quantized before each int8 matrix product (the quantized path only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationPrecision {
    /// One int8 scale per 32 values, as llama.cpp does.
    Int8,
    /// Int8, plus a second int8 pass over the quantization residual of chosen input blocks of
    /// each matmul (EmbeddingGemma's outlier channels, where the rounding error is; a built-in
    /// table calibrated once, which spends a fixed budget of extra work where the measured loss
    /// is largest: `src/outliers.rs`), and of every input block of the two Dense layers (which
    /// run once per text, not per token). About 12 % more int8 work for most of the accuracy
    /// of f32 activations (docs/NUMERICS.md). Models of another shape than
    /// EmbeddingGemma-300M's, and weight formats without 32-element blocks (K-quants), run
    /// plain int8 where the table does not apply.
    #[default]
    Int8Outliers,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// The arithmetic of the matrix products.
    pub path: NumericPath,
    /// The instruction set of every kernel; `None` picks the best this CPU supports.
    pub isa: Option<Isa>,
    /// Activation quantization of the quantized path.
    pub activations: ActivationPrecision,
}

/// One transformer block's weights. Norm weights are as stored in GGUF (`1 + w`).
#[derive(Debug)]
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub q_norm: Vec<f32>,
    pub k_norm: Vec<f32>,
    pub wo: Linear,
    pub post_attn_norm: Vec<f32>,
    pub ffn_norm: Vec<f32>,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub post_ffw_norm: Vec<f32>,
}

/// EmbeddingGemma loaded from a GGUF file, ready to embed token ids.
///
/// Immutable after load and `Sync`: several workers may call [`GemmaModel::embed_batch`] at
/// once, each with its own [`ModelScratch`].
#[derive(Debug)]
pub struct GemmaModel {
    config: ModelConfig,
    path: NumericPath,
    pub(crate) embedding: TokenEmbedding,
    pub(crate) layers: Vec<Layer>,
    pub(crate) output_norm: Vec<f32>,
    pub(crate) dense2: Linear,
    pub(crate) dense3: Linear,
    pub(crate) rope_full: RopeTable,
    pub(crate) rope_swa: RopeTable,
    kernels: &'static Kernels,
}

const ARCH: &str = "gemma-embedding";

/// Longest context this implementation accepts from a file (RoPE tables are `O(context)`).
const MAX_CONTEXT: u32 = 1 << 16;

impl GemmaModel {
    /// Opens and loads the GGUF file at `path`.
    pub fn open(path: impl AsRef<Path>, options: LoadOptions) -> Result<GemmaModel, ModelError> {
        let file = GgufFile::open(path).map_err(ModelError::Gguf)?;
        GemmaModel::load(Arc::new(file), options)
    }

    /// Loads the model from an opened GGUF file, checking every key, shape and type.
    pub fn load(file: Arc<GgufFile>, options: LoadOptions) -> Result<GemmaModel, ModelError> {
        Self::load_with(file, options, &quant_kernels::Serial)
    }

    /// [`GemmaModel::load`] with the weight matrices repacked in parallel on `par` (repacking
    /// is most of a load; the caller's threads make it a fraction of the cold start).
    pub fn load_with(
        file: Arc<GgufFile>,
        options: LoadOptions,
        par: &dyn ParallelFor,
    ) -> Result<GemmaModel, ModelError> {
        Self::load_impl(file, options, par, (&crate::outliers::BLOCKS, &crate::outliers::CHANNELS))
    }

    /// [`GemmaModel::load_with`] with another table of residual blocks than the built-in one
    /// (`src/outliers.rs`): `blocks[layer][kind]`, kinds Q/K/V, attention output, gate/up,
    /// down. For calibrating that table (`examples/calibrate_outliers.rs`), not for
    /// applications. Applies, like the built-in table, with
    /// [`ActivationPrecision::Int8Outliers`] to models of EmbeddingGemma-300M's shape.
    #[doc(hidden)]
    pub fn load_with_outlier_blocks(
        file: Arc<GgufFile>,
        options: LoadOptions,
        par: &dyn ParallelFor,
        blocks: &[[&[u8]; 4]],
    ) -> Result<GemmaModel, ModelError> {
        let none: Vec<[&[u16]; 4]> = vec![[&[]; 4]; blocks.len()];
        Self::load_impl(file, options, par, (blocks, &none))
    }

    fn load_impl(
        file: Arc<GgufFile>,
        options: LoadOptions,
        par: &dyn ParallelFor,
        (outlier_blocks, exact_channels): OutlierTable<'_>,
    ) -> Result<GemmaModel, ModelError> {
        let arch = file
            .get_str("general.architecture")
            .map_err(|e| key_error("general.architecture", e))?;
        if arch != ARCH {
            return Err(ModelError::WrongArchitecture {
                found: arch.to_owned(),
            });
        }
        let kernels = match options.isa {
            None => Kernels::get(),
            Some(isa) => Kernels::for_isa(isa).ok_or(ModelError::UnsupportedIsa { isa })?,
        };
        let mut config = read_config(&file)?;
        check_against_tensors(&file, &config)?;
        let d = config.embedding_length as u64;
        let ff = config.feed_forward_length as u64;
        let qd = config.q_dim() as u64;
        let kd = config.key_length as u64;

        let emb = tensor(&file, "token_embd.weight")?;
        let vocab = match emb.shape {
            [n0, n1] if *n0 == d => *n1,
            _ => return Err(shape_error(&emb, &[d, 0])),
        };
        let emb_ty = weight_type(&emb)?;
        if vocab == 0 {
            return Err(shape_error(&emb, &[d, 1]));
        }
        let row_bytes =
            emb_ty
                .row_bytes(config.embedding_length)
                .map_err(|e| ModelError::Kernel {
                    name: emb.name.to_owned(),
                    source: e,
                })?;
        let vocab_usize =
            usize::try_from(vocab).map_err(|_| shape_error(&emb, &[d, u32::MAX as u64]))?;
        let embedding = TokenEmbedding::new(
            Arc::clone(&file),
            emb.data_range().start,
            emb_ty,
            config.embedding_length,
            vocab_usize,
            row_bytes,
        );
        config.vocab_size = vocab_usize;
        // Outlier blocks apply to the shapes they were calibrated on.
        let table = options.activations == ActivationPrecision::Int8Outliers
            && config.block_count == outlier_blocks.len()
            && config.block_count == exact_channels.len()
            && config.embedding_length == 768
            && config.q_dim() == 768
            && config.feed_forward_length == 1152;
        let none: &[u8] = &[];
        let blocks = |l: usize, kind: usize| if table { outlier_blocks[l][kind] } else { none };
        let channels = |l: usize, kind: usize| if table { exact_channels[l][kind] } else { &[] };
        // Every matrix is packed first, in parallel; errors are then reported in file order.
        let hidden = config.dense_hidden as u64;
        let dense = if options.activations == ActivationPrecision::Int8Outliers { Residual::All } else { Residual::Blocks(none, &[]) };
        let mut jobs: Vec<(String, u64, u64, Residual<'_>)> = Vec::with_capacity(7 * config.block_count + 2);
        for l in 0..config.block_count {
            for (short, cols, rows, kind) in [
                ("attn_q", d, qd, 0),
                ("attn_k", d, kd, 0),
                ("attn_v", d, kd, 0),
                ("attn_output", qd, d, 1),
                ("ffn_gate", d, ff, 2),
                ("ffn_up", d, ff, 2),
                ("ffn_down", ff, d, 3),
            ] {
                jobs.push((format!("blk.{l}.{short}.weight"), cols, rows, Residual::Blocks(blocks(l, kind), channels(l, kind))));
            }
        }
        jobs.push(("dense_2.weight".into(), d, hidden, dense));
        jobs.push(("dense_3.weight".into(), hidden, config.embedding_dim as u64, dense));
        // All packed weights go to one huge-page mapping, each matrix to its own slot of it
        // (see `quant_kernels::weight_slots`); a tensor that will fail to load gets an empty
        // slot, and without the mapping every matrix gets a buffer of its own.
        let lens: Vec<usize> = jobs
            .iter()
            .map(|(name, cols, rows, _)| {
                matrix_tensor(&file, name, *cols, *rows)
                    .map_or(0, |(_, ty)| PackedMatrix::packed_len(ty, *rows as usize, *cols as usize, options.path == NumericPath::F32))
            })
            .collect();
        let slots: Vec<std::sync::Mutex<Option<WeightSlot>>> = match quant_kernels::weight_slots(&lens) {
            Some(s) => s.into_iter().map(|s| std::sync::Mutex::new(Some(s))).collect(),
            None => jobs.iter().map(|_| std::sync::Mutex::new(None)).collect(),
        };
        let packed: Vec<std::sync::Mutex<Option<Result<Linear, ModelError>>>> =
            jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
        par.run(jobs.len(), &|i| {
            let (name, cols, rows, residual) = &jobs[i];
            let slot = slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
            let m = matrix(&file, name, *cols, *rows, options.path, kernels, *residual, slot);
            *packed[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
        });
        let mut packed = packed.into_iter().map(|m| {
            m.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| unreachable!("the parallel-for runs every task"))
        });
        let mut mat = || packed.next().unwrap_or_else(|| unreachable!("one result per job"));

        let mut layers = Vec::with_capacity(config.block_count);
        for l in 0..config.block_count {
            let name = |s: &str| format!("blk.{l}.{s}.weight");
            let attn_norm = vector(&file, &name("attn_norm"), d)?;
            let (wq, wk, wv) = (mat()?, mat()?, mat()?);
            let q_norm = vector(&file, &name("attn_q_norm"), kd)?;
            let k_norm = vector(&file, &name("attn_k_norm"), kd)?;
            let wo = mat()?;
            let post_attn_norm = vector(&file, &name("post_attention_norm"), d)?;
            let ffn_norm = vector(&file, &name("ffn_norm"), d)?;
            let (gate, up, down) = (mat()?, mat()?, mat()?);
            let post_ffw_norm = vector(&file, &name("post_ffw_norm"), d)?;
            layers.push(Layer {
                attn_norm,
                wq,
                wk,
                wv,
                q_norm,
                k_norm,
                wo,
                post_attn_norm,
                ffn_norm,
                gate,
                up,
                down,
                post_ffw_norm,
            });
        }
        let output_norm = vector(&file, "output_norm.weight", d)?;
        let dense2 = mat()?;
        let dense3 = mat()?;

        let rope_full = RopeTable::new(
            config.rope_freq_base,
            config.key_length,
            config.context_length,
        );
        let rope_swa = RopeTable::new(
            config.rope_freq_base_swa,
            config.key_length,
            config.context_length,
        );
        Ok(GemmaModel {
            config,
            path: options.path,
            embedding,
            layers,
            output_norm,
            dense2,
            dense3,
            rope_full,
            rope_swa,
            kernels,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The numeric path chosen at load.
    pub fn numeric_path(&self) -> NumericPath {
        self.path
    }

    /// Width of the embeddings this model returns.
    pub fn embedding_dim(&self) -> usize {
        self.config.embedding_dim
    }

    /// The kernel table every product of this model runs on.
    pub fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// The widest activation row a per-token matmul quantizes (its input width plus 32 per
    /// residual block): what the GEMM scratch must hold per token.
    pub(crate) fn widest_token_k(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wo, &l.gate, &l.down])
            .map(Linear::packed_k)
            .max()
            .unwrap_or(0)
    }

    /// The widest activation row of the Dense head.
    pub(crate) fn widest_head_k(&self) -> usize {
        self.dense2.packed_k().max(self.dense3.packed_k())
    }

    /// Bytes held by the packed weight matrices (the embedding table stays in the file).
    pub fn packed_bytes(&self) -> usize {
        let per_layer = |l: &Layer| {
            [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                .iter()
                .map(|m| m.packed_bytes())
                .sum::<usize>()
        };
        self.layers.iter().map(per_layer).sum::<usize>()
            + self.dense2.packed_bytes()
            + self.dense3.packed_bytes()
    }

    /// Embeds a batch of tokenised texts (each with its `<bos>` and `<eos>`), writing one
    /// unit-length vector of [`GemmaModel::embedding_dim`] values per text to `out`
    /// (`texts.len() × dim`, row-major).
    ///
    /// `par` splits each matrix product over the caller's threads; pass
    /// [`quant_kernels::Serial`] to stay on the calling thread. Each text's vector is
    /// bit-identical whatever the other texts of the batch and whatever `par`.
    ///
    /// The only errors are the caller's inputs (checked before any work); the computation
    /// itself cannot fail.
    pub fn embed_batch(
        &self,
        texts: &[&[u32]],
        scratch: &mut ModelScratch,
        par: &dyn ParallelFor,
        out: &mut [f32],
    ) -> Result<(), InputError> {
        self.embed_batch_until(texts, scratch, par, out, &|| false).map(drop)
    }

    /// [`GemmaModel::embed_batch`] that asks `stop` before each layer of each forward pass and
    /// gives up at once when it says so, returning `Ok(false)` with `out` unfinished (a caller
    /// interrupted by its user wants the threads back within a layer's time, not the batch's).
    /// `Ok(true)`: every vector is written, bit-identical to `embed_batch`'s.
    pub fn embed_batch_until(
        &self,
        texts: &[&[u32]],
        scratch: &mut ModelScratch,
        par: &dyn ParallelFor,
        out: &mut [f32],
        stop: &dyn Fn() -> bool,
    ) -> Result<bool, InputError> {
        self.check_inputs(texts, out)?;
        let dim = self.config.embedding_dim;
        let mut start = 0;
        while start < texts.len() {
            // The longest run of texts from `start` that fits the budget; a text longer than
            // the budget alone grows the scratch.
            let mut end = start;
            let mut tokens = 0;
            while end < texts.len() && (end == start || tokens + texts[end].len() <= scratch.tokens)
            {
                tokens += texts[end].len();
                end += 1;
            }
            scratch.ensure(self, tokens);
            scratch.ensure_workers(par.num_threads());
            if !forward_group(
                self,
                &texts[start..end],
                scratch,
                par,
                &mut out[start * dim..end * dim],
                &mut NoTrace,
                stop,
            ) {
                return Ok(false);
            }
            start = end;
        }
        Ok(true)
    }

    /// Runs one text serially and hands every intermediate value to `tracer`
    /// (see [`crate::TracePoint`]). Writes the embedding to `out` (`dim` values).
    pub fn trace_text(
        &self,
        ids: &[u32],
        scratch: &mut ModelScratch,
        out: &mut [f32],
        tracer: &mut dyn Tracer,
    ) -> Result<(), InputError> {
        self.check_inputs(&[ids], out)?;
        scratch.ensure(self, ids.len());
        scratch.ensure_workers(1);
        forward_group(
            self,
            &[ids],
            scratch,
            &quant_kernels::Serial,
            out,
            &mut On(tracer),
            &|| false,
        );
        Ok(())
    }

    fn check_inputs(&self, texts: &[&[u32]], out: &[f32]) -> Result<(), InputError> {
        let expected = texts.len() * self.config.embedding_dim;
        if out.len() != expected {
            return Err(InputError::OutputLength {
                expected,
                got: out.len(),
            });
        }
        let vocab = self.embedding.vocab();
        for (i, t) in texts.iter().enumerate() {
            if t.is_empty() {
                return Err(InputError::EmptyText { text: i });
            }
            if t.len() > self.config.context_length {
                return Err(InputError::TextTooLong {
                    text: i,
                    tokens: t.len(),
                    max: self.config.context_length,
                });
            }
            if let Some((p, &id)) = t.iter().enumerate().find(|(_, id)| **id as usize >= vocab) {
                return Err(InputError::TokenOutOfRange {
                    text: i,
                    position: p,
                    id,
                    vocab,
                });
            }
        }
        Ok(())
    }
}

fn key_error(key: &str, e: GgufError) -> ModelError {
    if e.is_missing_key() {
        ModelError::MissingKey {
            key: key.to_owned(),
        }
    } else {
        ModelError::InvalidKey {
            key: key.to_owned(),
            source: e,
        }
    }
}

/// Plausible ranges of the hyper-parameters. They are wide (EmbeddingGemma sits well inside
/// each), but a value outside them is a corrupt or mis-made file, not a model: the forward pass
/// would run and return unit vectors that mean nothing.
mod limits {
    /// Residual width, feed-forward width, Dense widths.
    pub const MAX_WIDTH: u32 = 1 << 16;
    /// Transformer blocks.
    pub const MAX_BLOCKS: u32 = 1024;
    /// Query heads.
    pub const MAX_HEADS: u32 = 1024;
    /// Values per head.
    pub const MAX_HEAD_WIDTH: u32 = 4096;
    /// RMSNorm epsilon: models use 1e-5, 1e-6, at the extremes 1e-12 (BERT's LayerNorm); an
    /// epsilon near the activations' mean square would flatten every norm.
    pub const EPS: (f32, f32) = (1e-12, 1e-3);
    /// RoPE bases: 1e4 and 1e6 here, 5e5 for Llama 3, 1e7 and more for long-context models; at
    /// 1 or below every rotation frequency collapses.
    pub const ROPE_BASE: (f32, f32) = (1.0, 1e10);
}

fn read_config(file: &GgufFile) -> Result<ModelConfig, ModelError> {
    let key = |s: &str| format!("{ARCH}.{s}");
    let u32_key = |s: &str| -> Result<u32, ModelError> {
        let k = key(s);
        file.get_u32(&k).map_err(|e| key_error(&k, e))
    };
    let opt_u32 = |s: &str| -> Result<Option<u32>, ModelError> {
        let k = key(s);
        match file.get_u32(&k) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing_key() => Ok(None),
            Err(e) => Err(key_error(&k, e)),
        }
    };
    let f32_key = |s: &str| -> Result<f32, ModelError> {
        let k = key(s);
        file.get_f32(&k).map_err(|e| key_error(&k, e))
    };
    let opt_f32 = |s: &str| -> Result<Option<f32>, ModelError> {
        let k = key(s);
        match file.get_f32(&k) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing_key() => Ok(None),
            Err(e) => Err(key_error(&k, e)),
        }
    };
    let invalid = |k: &str, value: &dyn std::fmt::Display, reason: String| ModelError::InvalidConfig {
        key: key(k),
        value: value.to_string(),
        reason,
    };
    let in_range = |k: &str, v: u32, lo: u32, hi: u32| -> Result<u32, ModelError> {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(k, &v, format!("must be in {lo}..={hi}")))
        }
    };
    let in_range_f = |k: &str, v: f32, (lo, hi): (f32, f32), open_low: bool| -> Result<f32, ModelError> {
        let low_ok = if open_low { v > lo } else { v >= lo };
        if v.is_finite() && low_ok && v <= hi {
            Ok(v)
        } else {
            let bracket = if open_low { "(" } else { "[" };
            Err(invalid(k, &v, format!("must be in {bracket}{lo:e}, {hi:e}]")))
        }
    };

    let d = in_range("embedding_length", u32_key("embedding_length")?, 1, limits::MAX_WIDTH)?;
    let blocks = in_range("block_count", u32_key("block_count")?, 1, limits::MAX_BLOCKS)?;
    let ff = in_range("feed_forward_length", u32_key("feed_forward_length")?, 1, limits::MAX_WIDTH)?;
    let heads = in_range("attention.head_count", u32_key("attention.head_count")?, 1, limits::MAX_HEADS)?;
    let heads_kv = u32_key("attention.head_count_kv")?;
    // Room for <bos>, one token and <eos>.
    let context = in_range("context_length", u32_key("context_length")?, 3, MAX_CONTEXT)?;
    let eps = in_range_f(
        "attention.layer_norm_rms_epsilon",
        f32_key("attention.layer_norm_rms_epsilon")?,
        limits::EPS,
        false,
    )?;
    let base = in_range_f("rope.freq_base", f32_key("rope.freq_base")?, limits::ROPE_BASE, true)?;
    // llama.cpp's default for Gemma 3 when the SWA base is absent.
    let base_swa = match opt_f32("rope.freq_base_swa")? {
        Some(v) => in_range_f("rope.freq_base_swa", v, limits::ROPE_BASE, true)?,
        None => 10_000.0,
    };
    // A window of 1 would let each token see only itself.
    let window = in_range("attention.sliding_window", u32_key("attention.sliding_window")?, 2, MAX_CONTEXT)?;
    let key_length = match opt_u32("attention.key_length")? {
        Some(v) => in_range("attention.key_length", v, 2, limits::MAX_HEAD_WIDTH)?,
        None if d % heads == 0 => d / heads,
        None => {
            return Err(invalid(
                "attention.head_count",
                &heads,
                format!("does not divide embedding_length {d} (and attention.key_length is absent)"),
            ));
        }
    };
    if key_length % 2 != 0 || key_length == 0 {
        return Err(invalid("attention.key_length", &key_length, "RoPE needs an even, non-zero head width".into()));
    }
    let value_length = opt_u32("attention.value_length")?.unwrap_or(key_length);
    if heads_kv != 1 {
        return Err(ModelError::UnsupportedConfig {
            key: "attention.head_count_kv",
            value: heads_kv.to_string(),
            reason: "only one key/value head (EmbeddingGemma) is implemented",
        });
    }
    if value_length != key_length {
        return Err(invalid(
            "attention.value_length",
            &value_length,
            format!("must equal attention.key_length ({key_length})"),
        ));
    }
    if let Some(p) = opt_u32("pooling_type")?
        && p != 1
    {
        return Err(ModelError::UnsupportedConfig {
            key: "pooling_type",
            value: p.to_string(),
            reason: "EmbeddingGemma pools by mean (1)",
        });
    }
    let dense_hidden = match opt_u32("dense_2_feat_out")? {
        Some(v) => in_range("dense_2_feat_out", v, 1, limits::MAX_WIDTH)?,
        None => 3072,
    };
    let embedding_dim = match opt_u32("dense_3_feat_out")? {
        Some(v) => in_range("dense_3_feat_out", v, 1, limits::MAX_WIDTH)?,
        None => d,
    };
    if let Some(v) = opt_u32("dense_2_feat_in")?
        && v != d
    {
        return Err(invalid("dense_2_feat_in", &v, format!("must equal embedding_length ({d})")));
    }
    if let Some(v) = opt_u32("dense_3_feat_in")?
        && v != dense_hidden
    {
        return Err(invalid("dense_3_feat_in", &v, format!("must equal dense_2_feat_out ({dense_hidden})")));
    }
    Ok(ModelConfig {
        vocab_size: 0,
        embedding_length: d as usize,
        block_count: blocks as usize,
        feed_forward_length: ff as usize,
        head_count: heads as usize,
        head_count_kv: heads_kv as usize,
        key_length: key_length as usize,
        value_length: value_length as usize,
        context_length: context as usize,
        rms_norm_eps: eps,
        rope_freq_base: base,
        rope_freq_base_swa: base_swa,
        sliding_window: window as usize,
        // Not stored in GGUF: llama.cpp hard-codes this pattern for the architecture.
        swa_period: 6,
        attention_scale: 1.0 / (key_length as f32).sqrt(),
        dense_hidden: dense_hidden as usize,
        embedding_dim: embedding_dim as usize,
    })
}

/// The tensors of a model with `blocks` transformer blocks, in llama.cpp's naming.
const BLOCK_TENSORS: [&str; 13] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_q_norm",
    "attn_k_norm",
    "attn_output",
    "post_attention_norm",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
    "post_ffw_norm",
];
const GLOBAL_TENSORS: [&str; 4] = ["token_embd.weight", "output_norm.weight", "dense_2.weight", "dense_3.weight"];

/// Checks the hyper-parameters against the tensors present, before any is bound, so that a
/// wrong key is blamed by name (rather than as a shape or a missing tensor), and refuses
/// tensors this architecture does not use: a file that holds them is another model or a
/// corrupt one.
fn check_against_tensors(file: &GgufFile, config: &ModelConfig) -> Result<(), ModelError> {
    let blocks = config.block_count;
    let mut present = 0usize;
    for t in file.tensors() {
        let known = match t.name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
            Some((n, rest)) => {
                // Only the canonical spelling (no sign, no leading zeros) is llama.cpp's name.
                let n = n.parse::<usize>().ok().filter(|v| v.to_string() == n);
                let part = rest.strip_suffix(".weight");
                match (n, part) {
                    (Some(n), Some(part)) if BLOCK_TENSORS.contains(&part) => {
                        present = present.max(n + 1);
                        true
                    }
                    _ => false,
                }
            }
            None => GLOBAL_TENSORS.contains(&t.name),
        };
        if !known {
            return Err(ModelError::UnexpectedTensor { name: t.name.to_owned() });
        }
    }
    if present != blocks {
        return Err(ModelError::InvalidConfig {
            key: format!("{ARCH}.block_count"),
            value: blocks.to_string(),
            reason: format!("the file holds tensors for {present} blocks"),
        });
    }
    // Widths the tensors state, compared with the keys that should agree with them.
    let axis = |name: &str, i: usize| file.tensor(name).and_then(|t| t.shape.get(i).copied());
    let checks: [(&str, usize, &str, usize); 6] = [
        ("embedding_length", config.embedding_length, "token_embd.weight", 0),
        ("feed_forward_length", config.feed_forward_length, "blk.0.ffn_gate.weight", 1),
        ("attention.key_length", config.key_length, "blk.0.attn_k.weight", 1),
        ("attention.head_count", config.q_dim(), "blk.0.attn_q.weight", 1),
        ("dense_2_feat_out", config.dense_hidden, "dense_2.weight", 1),
        ("dense_3_feat_out", config.embedding_dim, "dense_3.weight", 1),
    ];
    for (key, want, tensor, i) in checks {
        if let Some(got) = axis(tensor, i)
            && got != want as u64
        {
            let value = if key == "attention.head_count" {
                format!("{} (× key_length {} = {want})", config.head_count, config.key_length)
            } else {
                want.to_string()
            };
            return Err(ModelError::InvalidConfig {
                key: format!("{ARCH}.{key}"),
                value,
                reason: format!("{tensor} has {got} along that axis"),
            });
        }
    }
    Ok(())
}

fn tensor<'a>(file: &'a GgufFile, name: &str) -> Result<TensorView<'a>, ModelError> {
    file.tensor(name).ok_or_else(|| ModelError::MissingTensor {
        name: name.to_owned(),
    })
}

fn shape_error(t: &TensorView<'_>, expected: &[u64]) -> ModelError {
    ModelError::ShapeMismatch {
        name: t.name.to_owned(),
        expected: expected.to_vec(),
        got: t.shape.to_vec(),
    }
}

fn weight_type(t: &TensorView<'_>) -> Result<QuantType, ModelError> {
    QuantType::from_ggml_id(t.ggml_type.id())
        .filter(|ty| ty.is_weight_format())
        .ok_or_else(|| ModelError::UnsupportedType {
            name: t.name.to_owned(),
            ty: t.ggml_type.name().to_owned(),
        })
}

/// A 1-D weight (a norm), dequantized to f32 whatever its stored type.
fn vector(file: &GgufFile, name: &str, len: u64) -> Result<Vec<f32>, ModelError> {
    let t = tensor(file, name)?;
    if t.shape != [len] {
        return Err(shape_error(&t, &[len]));
    }
    let ty = weight_type(&t)?;
    let mut out = vec![0.0f32; len as usize];
    quant_kernels::dequantize_row(ty, t.data, &mut out).map_err(|e| ModelError::Kernel {
        name: name.to_owned(),
        source: e,
    })?;
    // Cheap here (a few thousand values) and a sure sign of damage: one NaN in a norm weight
    // makes every vector NaN.
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite { name: name.to_owned(), index: i });
    }
    Ok(out)
}

/// `[layer][kind]` residual blocks and exact channels (see `outliers.rs`).
type OutlierTable<'a> = (&'a [[&'a [u8]; 4]], &'a [[&'a [u16]; 4]]);

/// Which input blocks of a matrix get a residual int8 pass, and which input channels are
/// multiplied in f32.
#[derive(Debug, Clone, Copy)]
enum Residual<'a> {
    Blocks(&'a [u8], &'a [u16]),
    All,
}

/// The tensor of a 2-D weight of ggml shape `[cols, rows]`, checked, and its format.
fn matrix_tensor<'f>(file: &'f GgufFile, name: &str, cols: u64, rows: u64) -> Result<(TensorView<'f>, QuantType), ModelError> {
    let t = tensor(file, name)?;
    if t.shape != [cols, rows] {
        return Err(shape_error(&t, &[cols, rows]));
    }
    let ty = weight_type(&t)?;
    Ok((t, ty))
}

/// A 2-D weight of ggml shape `[cols, rows]`, packed for the chosen numeric path, into `slot`
/// when the loader has one for it.
#[allow(clippy::too_many_arguments)]
fn matrix(
    file: &GgufFile,
    name: &str,
    cols: u64,
    rows: u64,
    path: NumericPath,
    kernels: &'static Kernels,
    residual: Residual<'_>,
    slot: Option<WeightSlot>,
) -> Result<Linear, ModelError> {
    let (t, ty) = matrix_tensor(file, name, cols, rows)?;
    let (rows, cols) = (rows as usize, cols as usize);
    let f32 = path == NumericPath::F32;
    // Formats without 32-element blocks (K-quants) run plain int8.
    let (blocks, channels): (Vec<usize>, Vec<usize>) = match residual {
        _ if f32 || !PackedMatrix::supports_residual_blocks(ty, cols) => Default::default(),
        Residual::Blocks(b, c) => (b.iter().map(|&b| usize::from(b)).collect(), c.iter().map(|&c| usize::from(c)).collect()),
        Residual::All => ((0..cols / 32).collect(), Vec::new()),
    };
    let outliers = Outliers { residual_blocks: &blocks, exact_channels: &channels };
    let packed = match slot {
        Some(slot) => PackedMatrix::pack_in(slot, kernels, ty, rows, cols, t.data, outliers, f32),
        None if f32 => PackedMatrix::new_f32(kernels, ty, rows, cols, t.data),
        None => PackedMatrix::with_outliers(kernels, ty, rows, cols, t.data, outliers),
    }
    .map_err(|e| ModelError::Kernel {
        name: name.to_owned(),
        source: e,
    })?;
    Ok(Linear::new(packed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_format::{GgmlType, Gguf, GgufWriter};

    /// A tiny model of this architecture (d 64, 2 layers, 2 heads of 32, ff 96, vocab 40,
    /// dense 128), every weight a small deterministic pattern, as GGUF bytes.
    /// `edit` may change the plan before writing: `(name, shape, type)` entries.
    fn tiny(
        edit: impl FnOnce(&mut Vec<(String, Vec<u64>, GgmlType)>, &mut Vec<(&'static str, u32)>),
    ) -> Vec<u8> {
        tiny_full(edit, |_| {})
    }

    /// [`tiny`] whose float keys may be edited too.
    fn tiny_full(
        edit: impl FnOnce(&mut Vec<(String, Vec<u64>, GgmlType)>, &mut Vec<(&'static str, u32)>),
        edit_floats: impl FnOnce(&mut Vec<(&'static str, f32)>),
    ) -> Vec<u8> {
        let (d, ff, hd, heads, vocab, hidden) = (64u64, 96u64, 32u64, 2u64, 40u64, 128u64);
        let mut keys: Vec<(&'static str, u32)> = vec![
            ("block_count", 2),
            ("context_length", 64),
            ("embedding_length", d as u32),
            ("feed_forward_length", ff as u32),
            ("attention.head_count", heads as u32),
            ("attention.head_count_kv", 1),
            ("attention.key_length", hd as u32),
            ("attention.value_length", hd as u32),
            ("attention.sliding_window", 8),
            ("dense_2_feat_out", hidden as u32),
            ("dense_3_feat_out", d as u32),
        ];
        let mut plan: Vec<(String, Vec<u64>, GgmlType)> = vec![
            ("token_embd.weight".into(), vec![d, vocab], GgmlType::Q8_0),
            ("output_norm.weight".into(), vec![d], GgmlType::F32),
            ("dense_2.weight".into(), vec![d, hidden], GgmlType::F32),
            ("dense_3.weight".into(), vec![hidden, d], GgmlType::F32),
        ];
        for l in 0..2 {
            for (n, shape) in [
                ("attn_norm", vec![d]),
                ("attn_q", vec![d, heads * hd]),
                ("attn_k", vec![d, hd]),
                ("attn_v", vec![d, hd]),
                ("attn_q_norm", vec![hd]),
                ("attn_k_norm", vec![hd]),
                ("attn_output", vec![heads * hd, d]),
                ("post_attention_norm", vec![d]),
                ("ffn_norm", vec![d]),
                ("ffn_gate", vec![d, ff]),
                ("ffn_up", vec![d, ff]),
                ("ffn_down", vec![ff, d]),
                ("post_ffw_norm", vec![d]),
            ] {
                plan.push((format!("blk.{l}.{n}.weight"), shape, GgmlType::F32));
            }
        }
        edit(&mut plan, &mut keys);
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "gemma-embedding")
            .unwrap();
        for (k, v) in &keys {
            w.add_metadata(format!("gemma-embedding.{k}"), *v).unwrap();
        }
        let mut floats: Vec<(&'static str, f32)> = vec![
            ("rope.freq_base", 1_000_000.0),
            ("attention.layer_norm_rms_epsilon", 1e-6),
        ];
        edit_floats(&mut floats);
        for (k, v) in &floats {
            w.add_metadata(format!("gemma-embedding.{k}"), *v).unwrap();
        }
        let mut data = Vec::new();
        for (i, (name, shape, ty)) in plan.iter().enumerate() {
            w.add_tensor(name.clone(), shape, *ty).unwrap();
            let n: u64 = shape.iter().product();
            let vals: Vec<f32> = (0..n)
                .map(|j| ((j * 7 + i as u64 * 13) % 23) as f32 / 23.0 - 0.45)
                .collect();
            data.push(match ty {
                GgmlType::Q8_0 => quant_kernels::quantize_q8_0(&vals).unwrap(),
                GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
                other => vec![0u8; other.tensor_bytes(shape).unwrap() as usize],
            });
        }
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        w.to_bytes(&refs).unwrap()
    }

    /// `GemmaModel::load` takes the mmap-backed file type; go through a temporary file.
    fn file_from(parsed: Arc<Gguf<Vec<u8>>>) -> Arc<GgufFile> {
        let path = temp_path();
        std::fs::write(&path, parsed.bytes()).unwrap();
        let f = GgufFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        Arc::new(f)
    }

    fn temp_path() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::env::temp_dir().join(format!("gemma-model-test-{}-{n}.gguf", std::process::id()))
    }

    fn load(bytes: Vec<u8>) -> Result<GemmaModel, ModelError> {
        let dir = temp_path();
        std::fs::write(&dir, bytes).unwrap();
        let r = GemmaModel::open(&dir, LoadOptions::default());
        std::fs::remove_file(&dir).unwrap();
        r
    }

    #[test]
    fn tiny_model_loads_and_embeds_unit_vectors() {
        let m = load(tiny(|_, _| {})).expect("tiny model loads");
        assert_eq!(m.config().vocab_size, 40);
        assert_eq!(m.config().head_count, 2);
        let mut s = ModelScratch::new(&m, 16);
        let texts: [&[u32]; 2] = [&[2, 5, 7, 1], &[2, 39, 1]];
        let mut out = vec![0.0; 2 * 64];
        m.embed_batch(&texts, &mut s, &quant_kernels::Serial, &mut out)
            .unwrap();
        for e in out.chunks(64) {
            let n: f64 = e.iter().map(|&x| f64::from(x).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-5, "norm {n}");
        }
        assert_ne!(out[..64], out[64..]);
    }

    #[test]
    fn a_stop_is_asked_before_each_layer_and_gives_up_at_once() {
        use std::cell::Cell;
        let m = load(tiny(|_, _| {})).unwrap();
        let layers = m.config().block_count;
        // A budget of 4 tokens: the two texts are two forward passes.
        let mut s = ModelScratch::new(&m, 4);
        let texts: [&[u32]; 2] = [&[2, 5, 7, 1], &[2, 39, 1]];
        let mut want = vec![0.0; 2 * 64];
        m.embed_batch(&texts, &mut s, &quant_kernels::Serial, &mut want).unwrap();

        let asked = Cell::new(0);
        let never = || {
            asked.set(asked.get() + 1);
            false
        };
        let mut out = vec![0.0; 2 * 64];
        assert_eq!(m.embed_batch_until(&texts, &mut s, &quant_kernels::Serial, &mut out, &never), Ok(true));
        assert_eq!(asked.get(), 2 * layers, "once per layer of each pass");
        assert_eq!(out, want, "bit-identical when never stopped");

        for stop_at in [1, layers + 1] {
            asked.set(0);
            let stop = || {
                asked.set(asked.get() + 1);
                asked.get() >= stop_at
            };
            assert_eq!(m.embed_batch_until(&texts, &mut s, &quant_kernels::Serial, &mut out, &stop), Ok(false));
            assert_eq!(asked.get(), stop_at, "no layer after the stop");
        }
        // The scratch serves the next call as before.
        m.embed_batch(&texts, &mut s, &quant_kernels::Serial, &mut out).unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let m = load(tiny(|_, _| {})).unwrap();
        let mut s = ModelScratch::new(&m, 16);
        let mut out = vec![0.0; 64];
        let par = &quant_kernels::Serial;
        assert_eq!(
            m.embed_batch(&[&[]], &mut s, par, &mut out),
            Err(InputError::EmptyText { text: 0 })
        );
        assert_eq!(
            m.embed_batch(&[&[2, 40]], &mut s, par, &mut out),
            Err(InputError::TokenOutOfRange {
                text: 0,
                position: 1,
                id: 40,
                vocab: 40
            })
        );
        assert_eq!(
            m.embed_batch(&[&[2; 65]], &mut s, par, &mut out),
            Err(InputError::TextTooLong {
                text: 0,
                tokens: 65,
                max: 64
            })
        );
        assert_eq!(
            m.embed_batch(&[&[2], &[2]], &mut s, par, &mut out),
            Err(InputError::OutputLength {
                expected: 128,
                got: 64
            })
        );
    }

    #[test]
    fn missing_tensor_is_named() {
        let e = load(tiny(|p, _| p.retain(|t| t.0 != "blk.1.ffn_up.weight"))).unwrap_err();
        assert!(
            matches!(e, ModelError::MissingTensor { ref name } if name == "blk.1.ffn_up.weight"),
            "{e}"
        );
        let e = load(tiny(|p, _| p.retain(|t| t.0 != "dense_3.weight"))).unwrap_err();
        assert!(
            matches!(e, ModelError::MissingTensor { ref name } if name == "dense_3.weight"),
            "{e}"
        );
    }

    #[test]
    fn wrong_shape_is_reported_with_both_shapes() {
        // Block 0 states the widths the keys are checked against; a later block that
        // disagrees is a bad tensor.
        let e = load(tiny(|p, _| {
            let t = p.iter_mut().find(|t| t.0 == "blk.1.attn_k.weight").unwrap();
            t.1 = vec![64, 64];
        }))
        .unwrap_err();
        match e {
            ModelError::ShapeMismatch {
                name,
                expected,
                got,
            } => {
                assert_eq!(name, "blk.1.attn_k.weight");
                assert_eq!(expected, [64, 32]);
                assert_eq!(got, [64, 64]);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn unusable_type_is_reported() {
        let e = load(tiny(|p, _| {
            let t = p
                .iter_mut()
                .find(|t| t.0 == "blk.0.ffn_gate.weight")
                .unwrap();
            t.2 = GgmlType::Q8_1;
        }))
        .unwrap_err();
        assert!(
            matches!(e, ModelError::UnsupportedType { ref name, .. } if name == "blk.0.ffn_gate.weight"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_unsupported_keys_are_reported() {
        let e = load(tiny(|_, k| k.retain(|k| k.0 != "block_count"))).unwrap_err();
        assert!(
            matches!(e, ModelError::MissingKey { ref key } if key == "gemma-embedding.block_count"),
            "{e}"
        );
        let e = load(tiny(|_, k| {
            k.iter_mut()
                .find(|k| k.0 == "attention.head_count_kv")
                .unwrap()
                .1 = 2
        }))
        .unwrap_err();
        assert!(
            matches!(
                e,
                ModelError::UnsupportedConfig {
                    key: "attention.head_count_kv",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn other_architecture_is_refused() {
        let mut w = GgufWriter::new();
        w.add_metadata("general.architecture", "llama").unwrap();
        let file = Arc::new(Gguf::parse(w.to_bytes(&[]).unwrap()).unwrap());
        let e = GemmaModel::load(file_from(file), LoadOptions::default()).unwrap_err();
        assert!(
            matches!(e, ModelError::WrongArchitecture { ref found } if found == "llama"),
            "{e}"
        );
    }

    fn invalid_key(e: &ModelError) -> Option<(&str, &str)> {
        match e {
            ModelError::InvalidConfig { key, reason, .. } => Some((key.as_str(), reason.as_str())),
            _ => None,
        }
    }

    fn set(k: &mut [(&'static str, u32)], key: &str, v: u32) {
        k.iter_mut().find(|k| k.0 == key).unwrap().1 = v;
    }

    #[test]
    fn block_count_must_match_the_blocks_present() {
        // Two blocks of tensors present.
        for (value, why) in [(1, "for 2 blocks"), (3, "for 2 blocks"), (0, "must be in 1..=")] {
            let e = load(tiny(|_, k| set(k, "block_count", value))).unwrap_err();
            let (key, reason) = invalid_key(&e).unwrap_or_else(|| panic!("block_count {value}: {e}"));
            assert_eq!(key, "gemma-embedding.block_count", "{e}");
            assert!(reason.contains(why), "{e}");
        }
    }

    #[test]
    fn nonsensical_hyper_parameters_are_refused_by_name() {
        for (key, value) in [
            ("attention.sliding_window", 0),
            ("attention.sliding_window", 1),
            ("context_length", 0),
            ("context_length", 1 << 20),
            ("embedding_length", 0),
            ("attention.head_count", 0),
            ("attention.key_length", 0),
            ("attention.key_length", 31),
            ("feed_forward_length", 0),
            ("dense_2_feat_out", 0),
        ] {
            let e = load(tiny(|_, k| set(k, key, value))).unwrap_err();
            let named = invalid_key(&e).map(|(k, _)| k.to_owned());
            assert_eq!(named.as_deref(), Some(format!("gemma-embedding.{key}").as_str()), "{key} = {value}: {e}");
        }
        for (key, value) in [
            ("attention.layer_norm_rms_epsilon", 1e30),
            ("attention.layer_norm_rms_epsilon", 0.0),
            ("attention.layer_norm_rms_epsilon", f32::NAN),
            ("attention.layer_norm_rms_epsilon", -1e-6),
            ("rope.freq_base", 1.0),
            ("rope.freq_base", f32::INFINITY),
        ] {
            let e = load(tiny_full(|_, _| {}, |f| f.iter_mut().find(|f| f.0 == key).unwrap().1 = value)).unwrap_err();
            let named = invalid_key(&e).map(|(k, _)| k.to_owned());
            assert_eq!(named.as_deref(), Some(format!("gemma-embedding.{key}").as_str()), "{key} = {value}: {e}");
        }
    }

    #[test]
    fn widths_that_disagree_with_the_tensors_name_the_key() {
        // 3 heads of 32 would need attn_q to have 96 outputs; the file has 64.
        let e = load(tiny(|_, k| set(k, "attention.head_count", 3))).unwrap_err();
        let (key, reason) = invalid_key(&e).unwrap_or_else(|| panic!("{e}"));
        assert_eq!(key, "gemma-embedding.attention.head_count");
        assert!(reason.contains("blk.0.attn_q.weight has 64"), "{e}");
        let e = load(tiny(|_, k| set(k, "feed_forward_length", 128))).unwrap_err();
        assert_eq!(invalid_key(&e).map(|k| k.0), Some("gemma-embedding.feed_forward_length"), "{e}");
        let e = load(tiny(|_, k| set(k, "embedding_length", 96))).unwrap_err();
        assert_eq!(invalid_key(&e).map(|k| k.0), Some("gemma-embedding.embedding_length"), "{e}");
    }

    #[test]
    fn tensors_the_architecture_does_not_use_are_refused() {
        for extra in ["output.weight", "blk.0.attn_q.bias", "blk.01.attn_norm.weight", "blk.x.attn_norm.weight", "rope_freqs.weight"] {
            let e = load(tiny(|p, _| p.push((extra.into(), vec![64], GgmlType::F32)))).unwrap_err();
            assert!(matches!(e, ModelError::UnexpectedTensor { ref name } if name == extra), "{extra}: {e}");
        }
        // A third block's tensors with block_count 2.
        let e = load(tiny(|p, _| p.push(("blk.2.attn_norm.weight".into(), vec![64], GgmlType::F32)))).unwrap_err();
        assert!(invalid_key(&e).is_some_and(|(k, r)| k == "gemma-embedding.block_count" && r.contains("3 blocks")), "{e}");
    }

    #[test]
    fn a_non_finite_norm_weight_is_refused() {
        let mut bytes = tiny(|_, _| {});
        // output_norm.weight is the second tensor; its data follows token_embd's.
        let file = Gguf::parse(bytes.clone()).unwrap();
        let t = file.tensor("output_norm.weight").unwrap();
        let at = t.data_range().start + 4 * 5;
        bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        let e = load(bytes).unwrap_err();
        assert!(matches!(e, ModelError::NonFinite { ref name, index: 5 } if name == "output_norm.weight"), "{e}");
    }
}
