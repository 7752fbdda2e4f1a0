//! Per-caller working memory: the BPE word and a cache of encoded words.

use std::hash::{BuildHasher, Hasher};

use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::bpe::Word;

/// Longest chunk (in bytes) the cache stores; longer ones are rare and cheap to
/// miss relative to their length.
const MAX_CACHED_WORD: usize = 64;

/// Entries kept before the cache starts over. About 30 bytes each, so a full cache
/// costs well under 1 MiB per scratch.
const MAX_CACHED_WORDS: usize = 32_768;

/// Reusable working memory for encoding.
///
/// Encoding needs a symbol list and a priority queue whose sizes follow the input,
/// plus a cache of recently encoded words; keeping them here makes a warmed-up
/// `Scratch` encode without allocating, apart from growing the caller's output
/// vector. [`crate::Tokenizer`] keeps a small pool of these for its plain `encode*`
/// methods; pass your own to the `*_with` methods to skip the pool's lock. A scratch
/// remembers which tokenizer filled its cache and starts over when used with another.
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    pub(crate) word: Word,
    pub(crate) cache: WordCache,
    /// Ids of the word being encoded, before they go to the cache and the output.
    pub(crate) ids: Vec<u32>,
}

impl Scratch {
    /// An empty scratch; it grows to the largest input it has seen.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Where a cached word's text and ids live in the arenas.
#[derive(Debug, Clone, Copy)]
struct Entry {
    text_start: u32,
    text_len: u32,
    ids_start: u32,
    ids_len: u32,
}

/// Words (space-delimited chunks, see `Tables::split_before_space`) and their ids.
///
/// Keyed by a 64-bit hash with the text kept in an arena and compared on every hit,
/// so a hash collision costs a miss, never a wrong answer. Texts and ids live in two
/// flat arenas, so inserting allocates nothing once they have grown.
#[derive(Debug, Default, Clone)]
pub(crate) struct WordCache {
    owner: u64,
    map: FxHashMap<u64, Entry>,
    text: Vec<u8>,
    ids: Vec<u32>,
}

impl WordCache {
    /// Empties the cache unless it was filled by the tokenizer tagged `owner`.
    pub(crate) fn claim(&mut self, owner: u64) {
        if self.owner != owner {
            self.clear();
            self.owner = owner;
        }
    }

    fn clear(&mut self) {
        self.map.clear();
        self.text.clear();
        self.ids.clear();
    }

    /// The hash `get`/`insert` take, or `None` when `word` is not cached by design.
    #[inline]
    pub(crate) fn key(word: &str) -> Option<u64> {
        if word.len() > MAX_CACHED_WORD {
            return None;
        }
        let mut h = FxBuildHasher.build_hasher();
        h.write(word.as_bytes());
        Some(h.finish())
    }

    #[inline]
    pub(crate) fn get(&self, key: u64, word: &str) -> Option<&[u32]> {
        let e = self.map.get(&key)?;
        let text = &self.text[e.text_start as usize..(e.text_start + e.text_len) as usize];
        (text == word.as_bytes()).then(|| &self.ids[e.ids_start as usize..(e.ids_start + e.ids_len) as usize])
    }

    pub(crate) fn insert(&mut self, key: u64, word: &str, ids: &[u32]) {
        if self.map.len() >= MAX_CACHED_WORDS {
            self.clear();
        }
        let e = Entry {
            text_start: self.text.len() as u32,
            text_len: word.len() as u32,
            ids_start: self.ids.len() as u32,
            ids_len: ids.len() as u32,
        };
        self.text.extend_from_slice(word.as_bytes());
        self.ids.extend_from_slice(ids);
        self.map.insert(key, e);
    }
}
