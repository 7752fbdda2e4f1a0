//! Turning plain vocabulary data into the tables the encoder runs on.
//!
//! The GGUF (and SentencePiece's `tokenizer.model`) carries pieces, scores and token
//! types but no merge list. HF's converter derives the merge list of `tokenizer.json`
//! from exactly that data, and this module derives the same ranks:
//!
//! * every split of every piece into two pieces that are both in the vocabulary is a
//!   merge `(left, right) -> piece`;
//! * merges are ordered by the merged piece's score (descending), then by the left
//!   part's length in characters (descending), then the right part's (descending),
//!   then by the merged piece's id; the rank is the position in that order.
//!
//! llama.cpp's converter rewrites the added tokens when it writes a GGUF: their scores
//! become -1000, `<unk>` becomes a control token, and user-defined tokens have U+2581
//! replaced by a space (`▁▁` is stored as two spaces). SentencePiece gives all of them
//! score 0 and HF keeps their original text, so the builder undoes both rewrites; data
//! taken straight from `tokenizer.model` passes through unchanged.

use std::path::Path;

use rustc_hash::FxHashMap;

use crate::bpe::{Merge, MergeMap, pair_key};
use crate::cache::{self, CacheStatus};
use crate::error::TokenizerError;
use crate::special::SpecialMatcher;
use crate::tokenizer::{Tables, Tokenizer};

/// SentencePiece's token types, as stored in GGUF's `tokenizer.ggml.token_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TokenType {
    /// An ordinary piece, produced by BPE merges.
    Normal = 1,
    /// `<unk>`.
    Unknown = 2,
    /// Control tokens such as `<bos>`, `<eos>`, `<start_of_turn>`, `<unused0>`.
    Control = 3,
    /// User-defined pieces such as `\n\n`, `<table>`, `▁▁▁`.
    UserDefined = 4,
    /// Reserved, never produced by SentencePiece; HF treats it as an ordinary piece.
    Unused = 5,
    /// `<0x00>`..`<0xFF>`, the byte-fallback pieces.
    Byte = 6,
}

impl TokenType {
    /// The type for a GGUF `token_type` value, `None` outside 1..=6.
    pub fn from_gguf(value: i32) -> Option<Self> {
        Some(match value {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }

    /// The GGUF `token_type` value.
    pub fn to_gguf(self) -> i32 {
        self as i32
    }

    /// Whether text equal to this token's text is split out of the input as this single
    /// token before BPE runs (HF's "added tokens": unknown, control and user-defined).
    pub fn is_added(self) -> bool {
        matches!(self, Self::Unknown | Self::Control | Self::UserDefined)
    }
}

/// Builds a [`Tokenizer`] from the data of GGUF's `tokenizer.ggml.*` keys.
///
/// ```
/// use bpe_tokenizer::Tokenizer;
/// let tok = Tokenizer::builder()
///     .tokens(["<pad>", "<eos>", "<bos>", "<unk>", "▁", "a", "b", "ab", "▁ab"])
///     .scores([0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0])
///     .token_types([3, 3, 3, 2, 1, 1, 1, 1, 1])
///     .bos_id(2)
///     .eos_id(1)
///     .unk_id(3)
///     .add_bos(true)
///     .add_eos(true)
///     .build()?;
/// assert_eq!(tok.encode("ab ab"), vec![2, 7, 8, 1]);
/// # Ok::<(), bpe_tokenizer::TokenizerError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct TokenizerBuilder {
    text: String,
    ends: Vec<usize>,
    scores: Vec<f32>,
    types: Vec<i32>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    added: Vec<(String, u32)>,
    no_word_cache: bool,
}

impl TokenizerBuilder {
    /// An empty builder: no tokens, no special ids, `add_bos`/`add_eos` off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Token texts in id order (`tokenizer.ggml.tokens`). Replaces earlier calls.
    pub fn tokens<I>(mut self, tokens: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.text.clear();
        self.ends.clear();
        for t in tokens {
            self.text.push_str(t.as_ref());
            self.ends.push(self.text.len());
        }
        self
    }

    /// Scores in id order (`tokenizer.ggml.scores`).
    pub fn scores(mut self, scores: impl IntoIterator<Item = f32>) -> Self {
        self.scores = scores.into_iter().collect();
        self
    }

    /// Token types in id order (`tokenizer.ggml.token_type`, values 1..=6).
    pub fn token_types(mut self, types: impl IntoIterator<Item = i32>) -> Self {
        self.types = types.into_iter().collect();
        self
    }

    /// `tokenizer.ggml.bos_token_id`.
    pub fn bos_id(mut self, id: u32) -> Self {
        self.bos = Some(id);
        self
    }

    /// `tokenizer.ggml.eos_token_id`.
    pub fn eos_id(mut self, id: u32) -> Self {
        self.eos = Some(id);
        self
    }

    /// `tokenizer.ggml.unknown_token_id`: used only when a byte-fallback piece is missing.
    pub fn unk_id(mut self, id: u32) -> Self {
        self.unk = Some(id);
        self
    }

    /// `tokenizer.ggml.padding_token_id`: recorded for the caller, not used to encode.
    pub fn pad_id(mut self, id: u32) -> Self {
        self.pad = Some(id);
        self
    }

    /// `tokenizer.ggml.add_bos_token`.
    pub fn add_bos(mut self, yes: bool) -> Self {
        self.add_bos = yes;
        self
    }

    /// `tokenizer.ggml.add_eos_token`.
    pub fn add_eos(mut self, yes: bool) -> Self {
        self.add_eos = yes;
        self
    }

    /// Whether encoding caches the ids of short space-delimited words in each
    /// [`crate::Scratch`] (default on; up to about 1 MiB per scratch). The ids are the
    /// same either way; the cache only saves re-running BPE on frequent words.
    pub fn word_cache(mut self, yes: bool) -> Self {
        self.no_word_cache = !yes;
        self
    }

    /// Splits `text` out of the input as the single id `id`, on top of the vocabulary's
    /// own added tokens. `id` is either an existing token with that text or the next id
    /// after the vocabulary (and after earlier added tokens). This is how HF's
    /// `<image_soft_token>` (id 262144, one past Gemma's vocabulary, so absent from any
    /// GGUF) can be reproduced when the model folder's `added_tokens.json` is at hand.
    pub fn added_token(mut self, text: impl Into<String>, id: u32) -> Self {
        self.added.push((text.into(), id));
        self
    }

    /// Validates the data and builds the encoder's tables, deriving the merge ranks from the
    /// pieces and scores (about 0.2 s for Gemma's 262,144 pieces; see
    /// [`TokenizerBuilder::build_cached`] for a start-up that skips it).
    pub fn build(self) -> Result<Tokenizer, TokenizerError> {
        let vocab = self.prepare()?;
        let derived = derive_checked(&self, &vocab)?;
        self.finish(vocab, derived)
    }

    /// As [`TokenizerBuilder::build`], with the derived merge ranks kept in a cache file in
    /// `dir` (created if missing), named after a SHA-256 of the vocabulary data, so the
    /// same vocabulary from any GGUF finds the same file and a different one never does.
    ///
    /// The file is used only when its magic, format version, vocabulary fingerprint,
    /// length and SHA-256 checksum all match and every id in it is inside the vocabulary;
    /// anything else (absent, unreadable, stale, truncated, corrupted) derives the ranks as
    /// `build` does and rewrites the file (temporary file + rename, so concurrent processes
    /// never see half a file). The tokenizer is the same either way, id for id; the
    /// returned [`CacheStatus`] says which path ran. Failing to write the cache is not an
    /// error (a read-only cache directory only costs the derivation next time).
    pub fn build_cached(self, dir: &Path) -> Result<(Tokenizer, CacheStatus), TokenizerError> {
        let vocab = self.prepare()?;
        let fingerprint = cache::fingerprint(&vocab);
        let path = cache::path(dir, &fingerprint);
        match cache::read(&path, &fingerprint, vocab.n) {
            Ok(derived) => {
                // The fingerprint is of exactly the data `derive_checked` validated when
                // the file was written (it is written only after a successful build), so
                // the duplicate check it does is not repeated here.
                self.check_special_ids(vocab.n)?;
                let tok = self.finish(vocab, derived)?;
                Ok((tok, CacheStatus::Loaded))
            }
            Err(why) => {
                let derived = derive_checked(&self, &vocab)?;
                let bytes = cache::encode(&fingerprint, &derived, vocab.n);
                let tok = self.finish(vocab, derived)?;
                let write = cache::write(dir, &path, &bytes);
                Ok((tok, CacheStatus::Derived { why, write }))
            }
        }
    }

    fn check_special_ids(&self, n: usize) -> Result<(), TokenizerError> {
        for (which, id) in [("bos", self.bos), ("eos", self.eos), ("unk", self.unk), ("pad", self.pad)] {
            if let Some(id) = id
                && id as usize >= n
            {
                return Err(TokenizerError::SpecialIdOutOfRange { which, id, vocab_size: n });
            }
        }
        if self.add_bos && self.bos.is_none() {
            return Err(TokenizerError::MissingSpecialId { which: "bos" });
        }
        if self.add_eos && self.eos.is_none() {
            return Err(TokenizerError::MissingSpecialId { which: "eos" });
        }
        Ok(())
    }

    /// Checks the arrays and computes what the merge ranks are derived from.
    fn prepare(&self) -> Result<Vocab, TokenizerError> {
        let n = self.ends.len();
        if n == 0 {
            return Err(TokenizerError::EmptyVocab);
        }
        if n != self.scores.len() || n != self.types.len() {
            return Err(TokenizerError::LengthMismatch {
                tokens: n,
                scores: self.scores.len(),
                token_types: self.types.len(),
            });
        }
        let too_many = TokenizerError::TooManyTokens { len: n + self.added.len() };
        let n32 = u32::try_from(n + self.added.len()).map_err(|_| too_many.clone())?;
        if n32 == u32::MAX || self.text.len() >= u32::MAX as usize / 4 {
            return Err(too_many);
        }

        let mut types = Vec::with_capacity(n);
        for (id, &value) in self.types.iter().enumerate() {
            let ty = TokenType::from_gguf(value)
                .ok_or(TokenizerError::InvalidTokenType { id: id as u32, value })?;
            types.push(ty);
        }
        let mut scores = Vec::with_capacity(n);
        for (id, (&score, &ty)) in self.scores.iter().zip(&types).enumerate() {
            if !score.is_finite() {
                return Err(TokenizerError::NonFiniteScore { id: id as u32, score });
            }
            // SentencePiece scores added tokens 0; the GGUF converter's -1000 would
            // move the `▁▁` merges from first to last. `+ 0.0` turns -0.0 into 0.0 so the
            // tie between `▁t` (-0.0) and the added tokens (0.0) stays a tie.
            scores.push(if ty.is_added() { 0.0 } else { score + 0.0 });
        }

        // Piece texts as HF sees them.
        let mut pieces = String::with_capacity(self.text.len() + 64);
        let mut offsets = Vec::with_capacity(n + self.added.len() + 1);
        offsets.push(0u32);
        let mut start = 0;
        for (&end, &ty) in self.ends.iter().zip(&types) {
            let t = &self.text[start..end];
            if ty == TokenType::UserDefined && t.contains(' ') {
                pieces.push_str(&t.replace(' ', "\u{2581}"));
            } else {
                pieces.push_str(t);
            }
            offsets.push(pieces.len() as u32);
            start = end;
        }
        Ok(Vocab { n, types, scores, pieces, offsets })
    }

    /// Builds the encoder's tables from the checked vocabulary and its merge ranks.
    fn finish(self, vocab: Vocab, derived: Derived) -> Result<Tokenizer, TokenizerError> {
        let Vocab { n, mut types, scores: _, mut pieces, mut offsets } = vocab;
        let piece = |id: usize| &pieces[offsets[id] as usize..offsets[id + 1] as usize];

        let mut merges = MergeMap::default();
        merges.reserve(derived.ranked.len());
        for (rank, &[left, right, merged]) in derived.ranked.iter().enumerate() {
            merges.insert(pair_key(left, right), Merge { rank: rank as u32, new_id: merged });
        }
        let no_split_after = derived.no_split_after;

        // Piece texts are unique (checked before the ranks were derived), so a scan finds
        // what a text → id map would.
        let mut space_id = u32::MAX;
        let mut byte_ids = [u32::MAX; 256];
        for id in 0..n {
            let t = piece(id);
            if t == "\u{2581}" {
                space_id = id as u32;
            } else if let Some(b) = byte_piece(t) {
                byte_ids[usize::from(b)] = id as u32;
            }
        }

        // Initial symbols: one per character when the character is a piece.
        let mut bmp = vec![u32::MAX; 0x1_0000].into_boxed_slice();
        let mut astral: FxHashMap<char, u32> = FxHashMap::default();
        for id in 0..n {
            let mut it = piece(id).chars();
            if let (Some(c), None) = (it.next(), it.next()) {
                match bmp.get_mut(c as usize) {
                    Some(slot) => *slot = id as u32,
                    None => {
                        astral.insert(c, id as u32);
                    }
                }
            }
        }
        let mut split_after_ascii = [false; 128];
        for (c, ok) in split_after_ascii.iter_mut().enumerate() {
            let c = c as u8 as char;
            *ok = c != ' ' && bmp[c as usize] != u32::MAX && !no_split_after.contains(&c);
        }

        // Added tokens: the vocabulary's own, then the extras.
        let mut added_ids: Vec<u32> =
            (0..n).filter(|&id| types[id].is_added() && !piece(id).is_empty()).map(|id| id as u32).collect();
        let mut next = n as u32;
        let mut extra_types = Vec::new();
        for (text, id) in &self.added {
            if text.is_empty() {
                return Err(TokenizerError::EmptyAddedToken { id: *id });
            }
            if (*id as usize) < n && piece(*id as usize) == text {
                added_ids.push(*id);
            } else if *id == next {
                added_ids.push(*id);
                extra_types.push(TokenType::Control);
                next += 1;
            } else {
                return Err(TokenizerError::AddedTokenId { text: text.clone(), id: *id, expected: next });
            }
        }
        let model_vocab = n;
        for (text, id) in &self.added {
            if *id as usize >= n {
                pieces.push_str(text);
                offsets.push(pieces.len() as u32);
            }
        }
        types.extend(extra_types);
        let piece = |id: u32| &pieces[offsets[id as usize] as usize..offsets[id as usize + 1] as usize];
        let specials = SpecialMatcher::new(added_ids.iter().map(|&id| (piece(id), id)));

        let tables = Tables {
            merges,
            bmp,
            astral,
            byte_ids,
            specials,
            space_id,
            split_after_ascii,
            no_split_after,
            word_cache: !self.no_word_cache,
            tag: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), n),
            model_vocab,
        };
        Ok(Tokenizer::from_parts(
            tables,
            pieces,
            offsets,
            types,
            [self.bos, self.eos, self.unk, self.pad],
            self.add_bos,
            self.add_eos,
        ))
    }
}

/// The byte of a byte-fallback piece `<0xNN>` (upper-case hex, as SentencePiece writes it).
fn byte_piece(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 || !hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The checked vocabulary: what the merge ranks are derived from, and what the cache
/// fingerprint covers.
pub(crate) struct Vocab {
    pub(crate) n: usize,
    pub(crate) types: Vec<TokenType>,
    /// Scores as ranked: added tokens 0, no -0.0.
    pub(crate) scores: Vec<f32>,
    /// Piece texts as HF sees them, concatenated (`offsets` has `n + 1` entries).
    pub(crate) pieces: String,
    pub(crate) offsets: Vec<u32>,
}

impl Vocab {
    fn piece(&self, id: usize) -> &str {
        &self.pieces[self.offsets[id] as usize..self.offsets[id + 1] as usize]
    }
}

/// What is derived from the vocabulary and cached: merges in rank order as
/// `[left, right, merged]`, and `Tables::no_split_after`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Derived {
    pub(crate) ranked: Vec<[u32; 3]>,
    pub(crate) no_split_after: Vec<char>,
}

/// Checks the piece texts are unique (with the special ids), then ranks the merges.
fn derive_checked(builder: &TokenizerBuilder, vocab: &Vocab) -> Result<Derived, TokenizerError> {
    let n = vocab.n;
    let mut ids: FxHashMap<&str, u32> = FxHashMap::default();
    ids.reserve(n);
    for id in 0..n {
        if let Some(first) = ids.insert(vocab.piece(id), id as u32) {
            return Err(TokenizerError::DuplicateToken {
                id: id as u32,
                first,
                text: vocab.piece(id).to_owned(),
            });
        }
    }
    builder.check_special_ids(n)?;
    Ok(derive_merges(vocab, &ids))
}

/// One candidate merge before ranking.
struct Rule {
    score: f32,
    len_left: u32,
    len_right: u32,
    merged: u32,
    left: u32,
    right: u32,
}

/// Ranks every `(left, right) -> merged` split the way HF's converter orders
/// `tokenizer.json`'s merges (see the module docs). Also returns the last characters
/// of left parts that merge with a right part starting with `▁` (see
/// `Tables::no_split_after`).
fn derive_merges(vocab: &Vocab, ids: &FxHashMap<&str, u32>) -> Derived {
    let mut no_split_after = Vec::new();
    let mut rules = Vec::with_capacity(vocab.n * 2);
    for (merged, &score) in vocab.scores.iter().enumerate() {
        let text = vocab.piece(merged);
        let n_chars = text.chars().count() as u32;
        for (k, (at, _)) in text.char_indices().skip(1).enumerate() {
            let (l, r) = text.split_at(at);
            // Most prefixes are not pieces: look the suffix up only for those that are.
            let Some(&left) = ids.get(l) else { continue };
            let Some(&right) = ids.get(r) else { continue };
            if r.starts_with('\u{2581}')
                && let Some(last) = l.chars().next_back()
                && last != '\u{2581}'
                && !no_split_after.contains(&last)
            {
                no_split_after.push(last);
            }
            let len_left = k as u32 + 1;
            rules.push(Rule {
                score,
                len_left,
                len_right: n_chars - len_left,
                merged: merged as u32,
                left,
                right,
            });
        }
    }
    rules.sort_unstable_by(|a, b| {
        // Scores are finite, so `total_cmp` agrees with `<` here; -0.0 was removed.
        b.score
            .total_cmp(&a.score)
            .then(b.len_left.cmp(&a.len_left))
            .then(b.len_right.cmp(&a.len_right))
            .then(a.merged.cmp(&b.merged))
    });
    Derived { ranked: rules.iter().map(|r| [r.left, r.right, r.merged]).collect(), no_split_after }
}
