use thiserror::Error;

/// Everything that can go wrong when building a [`crate::Tokenizer`] or using it.
///
/// Building validates the vocabulary once, so encoding never fails except for a
/// truncation limit that cannot hold the special ids, and decoding fails only on
/// ids outside the vocabulary.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The builder was given no tokens.
    #[error("the vocabulary is empty")]
    EmptyVocab,
    /// More tokens than a `u32` id can address.
    #[error("the vocabulary has {len} tokens, more than u32 ids can address")]
    TooManyTokens {
        /// Number of tokens given.
        len: usize,
    },
    /// `tokens`, `scores` and `token_types` do not have the same length.
    #[error("vocabulary arrays differ in length: {tokens} tokens, {scores} scores, {token_types} token types")]
    LengthMismatch {
        /// Number of token strings.
        tokens: usize,
        /// Number of scores.
        scores: usize,
        /// Number of token types.
        token_types: usize,
    },
    /// A token type outside SentencePiece's 1..=6.
    #[error("token {id} has type {value}, expected 1..=6")]
    InvalidTokenType {
        /// Token id.
        id: u32,
        /// The raw value.
        value: i32,
    },
    /// A score that is NaN or infinite, which has no place in the merge order.
    #[error("token {id} has a non-finite score {score}")]
    NonFiniteScore {
        /// Token id.
        id: u32,
        /// The raw score.
        score: f32,
    },
    /// Two tokens with the same text (after undoing the GGUF converter's space rewrite).
    #[error("token {id} has the same text {text:?} as token {first}")]
    DuplicateToken {
        /// The later id.
        id: u32,
        /// The earlier id with the same text.
        first: u32,
        /// The shared text.
        text: String,
    },
    /// A special id (bos, eos, unk, pad) outside the vocabulary.
    #[error("{which} id {id} is outside the vocabulary of {vocab_size} tokens")]
    SpecialIdOutOfRange {
        /// Which special token.
        which: &'static str,
        /// The id given.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// `add_bos`/`add_eos` is set but the corresponding id was not given.
    #[error("{which} must be added to every text but no {which} id was given")]
    MissingSpecialId {
        /// Which special token.
        which: &'static str,
    },
    /// An extra added token whose id is neither an existing token with the same
    /// text nor the next free id after the vocabulary.
    #[error("added token {text:?} has id {id}, expected {expected} or an existing token with that text")]
    AddedTokenId {
        /// The added token's text.
        text: String,
        /// The id given.
        id: u32,
        /// The next free id.
        expected: u32,
    },
    /// An added token with empty text, which would match everywhere.
    #[error("added token {id} has empty text")]
    EmptyAddedToken {
        /// The id given.
        id: u32,
    },
    /// A truncation limit too small to hold the `<bos>`/`<eos>` ids that are always added.
    #[error("a limit of {max_ids} ids cannot hold the {needed} special ids added to every text")]
    LimitTooSmall {
        /// The limit given.
        max_ids: usize,
        /// Ids added to every text.
        needed: usize,
    },
    /// An id outside the vocabulary passed to decoding or piece lookup.
    #[error("id {id} is outside the vocabulary of {vocab_size} tokens")]
    UnknownId {
        /// The id given.
        id: u32,
        /// Vocabulary size (including added tokens).
        vocab_size: usize,
    },
}

/// Why [`crate::TokenizerBuilder::build_cached`] could not use its cache file (it then
/// derives the merge ranks and rewrites the file; this is reported, never returned as a
/// build error).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CacheError {
    /// No cache file for this vocabulary yet.
    #[error("no cache file")]
    Absent,
    /// The file exists but could not be read.
    #[error("cannot read the cache file: {0}")]
    Io(#[source] std::io::Error),
    /// Not a merge cache file.
    #[error("not a merge cache file (bad magic)")]
    Magic,
    /// Written by a build with another cache format.
    #[error("cache format version {found}, this build reads version {expected}")]
    Version {
        /// Version in the file.
        found: u32,
        /// Version this build writes.
        expected: u32,
    },
    /// Shorter or longer than its header says (a torn or truncated write).
    #[error("cache file is {actual} bytes, its header implies {expected}")]
    Length {
        /// Length the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// The checksum does not match the contents.
    #[error("cache checksum mismatch (corrupted file)")]
    Checksum,
    /// A valid file derived from a different vocabulary.
    #[error("cache file was derived from a different vocabulary")]
    Stale,
    /// A merge names a token outside the vocabulary.
    #[error("cache merge {index} names token {id}, outside the vocabulary of {vocab_size}")]
    IdOutOfRange {
        /// Rank of the merge.
        index: usize,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// A no-split entry that is not a Unicode scalar value.
    #[error("cache no-split entry {index} is {value:#x}, not a character")]
    BadChar {
        /// Position of the entry.
        index: usize,
        /// The raw value.
        value: u32,
    },
}
