//! Fetch, verify and cache the default EmbeddingGemma model.
#![deny(missing_docs)]
