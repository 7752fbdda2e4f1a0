//! The EmbeddingGemma forward pass over GGUF weights.
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
mod pooling;
mod rope;
mod scratch;
mod trace;

pub use config::{LayerKind, ModelConfig};
pub use error::{InputError, ModelError};
pub use quant_kernels::{Isa, ParallelFor, Serial};
pub use model::{GemmaModel, LoadOptions, NumericPath};
pub use pooling::{l2_normalize, matryoshka};
pub use scratch::ModelScratch;
pub use trace::{TracePoint, Tracer};
