//! The public embedding API: an [`Embedder`] that turns a batch of texts into EmbeddingGemma
//! vectors as fast as the cores allow.
//!
//! This crate is where the layers meet: it opens the GGUF (`gguf-format`), builds the tokenizer
//! from its `tokenizer.ggml.*` keys (`bpe-tokenizer`), loads the model (`gemma-model`, whose
//! matmuls run on `quant-kernels`), and owns the only threads in the library stack: one
//! persistent pool per `Embedder`. It also decides, per call, how to use those threads:
//!
//! - **coarse**: texts grouped into token-budgeted work items, items spread over the workers,
//!   every matmul serial. No synchronisation inside a forward pass; best when there are enough
//!   texts to keep every worker busy.
//! - **fine**: one work item at a time, every matmul split across the workers. The only way to
//!   use more than one core on a single text.
//! - **auto**: simulates the coarse schedule for the batch's lengths and picks coarse when it
//!   balances well enough to beat fine (see `plan.rs`).
//!
//! Whatever the mode, a text's vector is bit-identical: GEMM rows do not depend on their
//! neighbours or on how the work is split, attention and pooling run per text.
//!
//! ```
//! use embed_runtime::{Embedder, Prompt};
//! # fn main() -> Result<(), embed_runtime::EmbedError> {
//! // The default model (EmbeddingGemma-300M Q8_0), fetched into the cache on first use.
//! let embedder = Embedder::builder().threads(2).build()?;
//! let out = embedder.embed(&["A man is playing a flute.", "Someone plays music.", "The stock market fell."])?;
//! assert_eq!((out.len(), out.dim()), (3, 768));
//! let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
//! // Vectors are unit length, and related texts are closer than unrelated ones.
//! assert!((cos(out.row(0), out.row(0)) - 1.0).abs() < 1e-5);
//! assert!(cos(out.row(0), out.row(1)) > cos(out.row(0), out.row(2)));
//!
//! // Retrieval prompts and a 256-d Matryoshka prefix, renormalised.
//! let query = Embedder::builder()
//!     .threads(2)
//!     .prompt(Prompt::named("query").unwrap())
//!     .dims(256)
//!     .renormalize(true)
//!     .build()?;
//! let q = query.embed(&["who plays the flute?"])?;
//! assert_eq!(q.dim(), 256);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod default_model;
mod embedder;
mod embeddings;
mod error;
mod options;
mod plan;
mod pool;
mod prompt;
mod tuner;
mod vocab;

pub use default_model::default_model_path;
pub use embedder::{DEFAULT_TOKEN_BUDGET, Embedder, EmbedderBuilder, MAX_THREADS_PER_CORE, MAX_TOKEN_BUDGET};
pub use embeddings::Embeddings;
pub use error::{EmbedError, TextError};
pub use options::{Dims, EmbedOptions, Input, MATRYOSHKA_DIMS, Prepared, Truncation};
pub use gemma_model::{ActivationPrecision, NumericPath};
pub use plan::Parallelism;
pub use prompt::{NAMED_PROMPTS, Prompt};
pub use quant_kernels::Isa;
pub use vocab::load_tokenizer;
pub use bpe_tokenizer::Tokenizer;
