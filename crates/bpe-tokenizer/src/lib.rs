//! Gemma's SentencePiece-BPE tokenizer, built from plain vocabulary data.
#![deny(missing_docs)]
