//! Convert the sentence-transformers EmbeddingGemma folder to GGUF.
#![deny(missing_docs)]
