//! The EmbeddingGemma forward pass over GGUF weights.
#![deny(missing_docs)]
