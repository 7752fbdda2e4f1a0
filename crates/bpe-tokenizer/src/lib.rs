//! Gemma's SentencePiece-BPE tokenizer, built from plain vocabulary data.
//!
//! EmbeddingGemma's reference pipeline tokenizes with HF `tokenizers` on the model's
//! `tokenizer.json`; a runtime loading a GGUF only has the `tokenizer.ggml.*` arrays
//! (pieces, scores, token types). This crate rebuilds exactly the reference behaviour
//! from those arrays:
//!
//! * text equal to an added token (control, user-defined and unknown pieces: `<bos>`,
//!   `<start_of_turn>`, `<unused0>`, `\n\n`, `\t`, `<table>`, literal `▁▁`...) is split
//!   out first, leftmost-longest, on the raw text;
//! * the rest has spaces replaced by `▁` (no dummy prefix, no Unicode normalisation) and
//!   each stretch between added tokens is one BPE word;
//! * a character that is not a piece falls back to its UTF-8 bytes as `<0xNN>` pieces;
//! * BPE merges the lowest-ranked adjacent pair first, leftmost on ties, with ranks
//!   derived from the scores the way HF's converter derived `tokenizer.json`'s merges
//!   (see [`TokenizerBuilder`] and `src/builder.rs`).
//!
//! Speed comes from doing less than HF, not from a different algorithm: no offsets
//! (recovered on demand by [`Tokenizer::offsets`]),
//! strings or `Encoding` objects, a stale-entry check without hash lookups in the
//! merge queue, a direct table for character ids, and cutting each BPE word at the
//! spaces that no merge rule can cross (derived from the rules at build time; Gemma has
//! one rule, `>` + `▁</`, that does cross) so that frequent words come from a cache.
//!
//! The crate does not depend on a GGUF reader: the runtime passes the arrays to
//! [`TokenizerBuilder`]. Encoding allocates nothing in the steady state: symbol lists,
//! the merge queue and the word cache live in a [`Scratch`] (pooled inside the
//! tokenizer, or owned by the caller), and ids go into a caller's `Vec`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod bpe;
mod builder;
mod cache;
mod error;
mod scratch;
mod special;
mod tokenizer;

pub use scratch::Scratch;
pub use builder::{TokenType, TokenizerBuilder};
pub use cache::CacheStatus;
pub use error::{CacheError, TokenizerError};
pub use tokenizer::{Encoded, Tokenizer};
