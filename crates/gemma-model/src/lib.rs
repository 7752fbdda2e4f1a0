//! The EmbeddingGemma forward pass over GGUF weights: token ids in, unit vectors out.
//!
//! # Why it is shaped this way
//! - **Checked once, infallible after.** [`GemmaModel::load`] reads every hyper-parameter from
//!   the `gemma-embedding.*` keys, binds every tensor by name and checks its shape and type
//!   ([`ModelError`]); the forward pass then only returns values. The only errors of
//!   [`GemmaModel::embed_batch`] are the caller's inputs ([`InputError`]), checked before any work.
//! - **Weights stay where they are.** The token embedding table is read from the memory map one
//!   row at a time in its own format (Q8_0, Q6_K...); matrices are packed once by
//!   `quant-kernels` for the chosen [`NumericPath`]: f32 (the accuracy reference) or quantized
//!   activations with integer dot products (the fast path).
//! - **Ragged batches without padding.** The tokens of all texts are the rows of one activation
//!   matrix, so each weight is applied by one GEMM per layer; only attention (per text, all
//!   query heads against the shared key/value head in two matrix products per block of 32
//!   queries) and mean pooling see text boundaries.
//! - **A text's vector does not depend on its company.** Per-row operations read only their
//!   row, attention only its text, pooling sums a text's rows in order, and the GEMM's rows are
//!   independent of each other and of the thread split: a vector is bit-identical alone, in any
//!   batch and with any [`ParallelFor`].
//! - **No threads, no steady-state allocation.** The caller passes a [`ParallelFor`] (the
//!   runtime owns the threads) and one [`ModelScratch`] per worker, sized from a token budget.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gemma_model::{GemmaModel, LoadOptions, ModelScratch, Serial};
//! let model = GemmaModel::open("embeddinggemma-300m-q8_0.gguf", LoadOptions::default())?;
//! let mut scratch = ModelScratch::new(&model, 512);
//! let ids: &[u32] = &[2, 236776, 880, 563, 5662, 496, 87712, 236761, 1];
//! let mut out = vec![0.0f32; model.embedding_dim()];
//! model.embed_batch(&[ids], &mut scratch, &Serial, &mut out)?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod activation;
mod attention;
mod config;
mod error;
mod forward;
mod linear;
mod model;
mod norm;
mod outliers;
mod pooling;
mod rope;
mod scratch;
mod trace;

pub use config::{LayerKind, ModelConfig};
pub use error::{InputError, ModelError};
pub use model::{ActivationPrecision, GemmaModel, LoadOptions, NumericPath};
pub use pooling::{l2_normalize, matryoshka};
pub use quant_kernels::{Isa, ParallelFor, Serial};
pub use scratch::ModelScratch;
pub use trace::{TracePoint, Tracer};
