//! The tokenizer: splitting out added tokens, BPE on what remains, decoding.

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::bpe::{MergeMap, NONE, Word};
use crate::scratch::{Scratch, WordCache};
use crate::builder::{TokenType, TokenizerBuilder};
use crate::error::TokenizerError;
use crate::special::SpecialMatcher;

/// What the encoder runs on, built once by [`TokenizerBuilder::build`].
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) merges: MergeMap,
    /// Piece id of each character of the Basic Multilingual Plane, `NONE` if the
    /// character is not a piece (a 256 KiB table: one load per character).
    pub(crate) bmp: Box<[u32]>,
    /// Piece id of every single-character piece outside the BMP.
    pub(crate) astral: FxHashMap<char, u32>,
    /// Id of `<0xNN>` for each byte, `NONE` if missing.
    pub(crate) byte_ids: [u32; 256],
    pub(crate) specials: SpecialMatcher,
    /// Id of `▁`, `NONE` if absent (then words are never split).
    pub(crate) space_id: u32,
    /// For each ASCII character: may a BPE word be cut between it and a following
    /// space? True when it is a piece, not a space, and no merge rule joins a left
    /// part ending in it to a right part starting with `▁`. Cutting there cannot
    /// change the result, because no merge can span the cut; it lets words be cached.
    pub(crate) split_after_ascii: [bool; 128],
    /// Last characters of left parts of merges whose right part starts with `▁`
    /// (for Gemma only `>`, from `>` + `▁</`): no cut after them.
    pub(crate) no_split_after: Vec<char>,
    /// Whether `Scratch::cache` is used.
    pub(crate) word_cache: bool,
    /// Identifies this tokenizer to the word caches in `Scratch`es.
    pub(crate) tag: u64,
    /// Tokens that belong to the BPE model (extra added tokens come after).
    pub(crate) model_vocab: usize,
}

impl Tables {
    /// The id of the single-character piece `c`, `NONE` if there is none.
    #[inline(always)]
    pub(crate) fn char_id(&self, c: char) -> u32 {
        match self.bmp.get(c as usize) {
            Some(&id) => id,
            None => self.astral.get(&c).copied().unwrap_or(NONE),
        }
    }
}

/// Most scratch buffers the pool keeps; more concurrent callers simply allocate.
const POOL_LIMIT: usize = 64;

/// A segment is BPE-encoded in pieces of at most this many bytes so that symbol
/// positions and spans fit in `u32` (a span can be up to 3 units per input byte).
const MAX_SEGMENT: usize = (u32::MAX / 4) as usize;

/// Gemma's SentencePiece-BPE tokenizer, reproducing HF `tokenizers` on the model's
/// `tokenizer.json` id for id.
///
/// Build it with [`Tokenizer::builder`] from the GGUF's `tokenizer.ggml.*` data. It is
/// `Send + Sync`; share one behind an `Arc`.
#[derive(Debug)]
pub struct Tokenizer {
    tables: Tables,
    pieces: String,
    offsets: Vec<u32>,
    types: Vec<TokenType>,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    pool: Mutex<Vec<Scratch>>,
}

/// Lengths reported by the truncating encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoded {
    /// Ids written, special ids included.
    pub n_ids: usize,
    /// Ids the text has without truncation, special ids included.
    pub n_ids_untruncated: usize,
}

impl Encoded {
    /// Whether content ids were dropped to respect the limit.
    pub fn truncated(&self) -> bool {
        self.n_ids_untruncated > self.n_ids
    }
}

impl Tokenizer {
    /// A builder taking the vocabulary data.
    pub fn builder() -> TokenizerBuilder {
        TokenizerBuilder::new()
    }

    pub(crate) fn from_parts(
        tables: Tables,
        pieces: String,
        offsets: Vec<u32>,
        types: Vec<TokenType>,
        [bos, eos, unk, pad]: [Option<u32>; 4],
        add_bos: bool,
        add_eos: bool,
    ) -> Self {
        Self { tables, pieces, offsets, types, bos, eos, unk, pad, add_bos, add_eos, pool: Mutex::new(Vec::new()) }
    }

    /// Number of ids, extra added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.types.len()
    }

    /// The piece text of `id` as HF shows it (`▁the`, `<0x0A>`, `<bos>`, `▁▁`).
    pub fn piece(&self, id: u32) -> Option<&str> {
        let i = id as usize;
        let (start, end) = (*self.offsets.get(i)?, *self.offsets.get(i + 1)?);
        self.pieces.get(start as usize..end as usize)
    }

    /// The token type of `id`.
    pub fn token_type(&self, id: u32) -> Option<TokenType> {
        self.types.get(id as usize).copied()
    }

    /// Whether `id` is one of the tokens HF tokenizers marks `special` and leaves out of a
    /// decode with `skip_special_tokens`: Gemma's control tokens (`<pad>`, `<eos>`, `<bos>`,
    /// `<unk>`, `<start_of_turn>`, `<end_of_image>`, `<image_soft_token>`, ...) but not
    /// `<mask>` or the `<unusedN>` reserve, which Gemma's `tokenizer.json` adds as ordinary
    /// (non-special) tokens though SentencePiece types them as control.
    pub fn is_special(&self, id: u32) -> bool {
        matches!(self.token_type(id), Some(TokenType::Control | TokenType::Unknown))
            && self.piece(id).is_some_and(|p| {
                p != "<mask>" && !p.strip_prefix("<unused").and_then(|r| r.strip_suffix('>')).is_some_and(|n| {
                    !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                })
            })
    }

    /// `<bos>` id, if given.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// `<eos>` id, if given.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// `<unk>` id, if given.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// `<pad>` id, if given.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `<bos>` is put before every text.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `<eos>` is put after every text.
    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    /// Number of special ids added to every text (`<bos>`, `<eos>`).
    pub fn n_special_ids(&self) -> usize {
        usize::from(self.add_bos) + usize::from(self.add_eos)
    }

    /// The ids of `text`, with `<bos>`/`<eos>` as configured.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        self.encode_into(text, &mut out);
        out
    }

    /// Clears `out` and writes the ids of `text` into it, reusing its capacity.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) {
        self.with_scratch(|s| self.encode_into_with(text, out, s));
    }

    /// [`Self::encode_into`] with caller-owned scratch memory (no pool lock).
    pub fn encode_into_with(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        out.clear();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            out.push(bos);
        }
        self.encode_content(text, scratch, |id| out.push(id));
        if let (true, Some(eos)) = (self.add_eos, self.eos) {
            out.push(eos);
        }
    }

    /// Clears `out` and writes at most `max_ids` ids: `<bos>`, the first
    /// `max_ids - n_special_ids()` content ids, `<eos>`, which is how the reference
    /// truncates (2048 ids: `<bos>` + 2046 + `<eos>`). Reports the untruncated length.
    pub fn encode_truncated_into(
        &self,
        text: &str,
        max_ids: usize,
        out: &mut Vec<u32>,
    ) -> Result<Encoded, TokenizerError> {
        self.with_scratch(|s| self.encode_truncated_into_with(text, max_ids, out, s))
    }

    /// [`Self::encode_truncated_into`] with caller-owned scratch memory.
    pub fn encode_truncated_into_with(
        &self,
        text: &str,
        max_ids: usize,
        out: &mut Vec<u32>,
        scratch: &mut Scratch,
    ) -> Result<Encoded, TokenizerError> {
        let needed = self.n_special_ids();
        if max_ids < needed {
            return Err(TokenizerError::LimitTooSmall { max_ids, needed });
        }
        out.clear();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            out.push(bos);
        }
        let head = out.len();
        // BPE runs over the whole text (a late merge can change early ids), so the
        // content is encoded in full and cut afterwards.
        self.encode_content(text, scratch, |id| out.push(id));
        let n_content = out.len() - head;
        out.truncate(head + n_content.min(max_ids - needed));
        if let (true, Some(eos)) = (self.add_eos, self.eos) {
            out.push(eos);
        }
        Ok(Encoded { n_ids: out.len(), n_ids_untruncated: n_content + needed })
    }

    /// Number of ids `encode` would return, without building them.
    pub fn count_ids(&self, text: &str) -> usize {
        let mut n = self.n_special_ids();
        self.with_scratch(|s| self.encode_content(text, s, |_| n += 1));
        n
    }

    /// The text of `ids` as HF's decoder gives it: `▁` becomes a space, runs of
    /// `<0xNN>` pieces become their UTF-8 text (each byte of an invalid run becomes
    /// U+FFFD), every other piece, special or not, is written as its text.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut text = String::with_capacity(ids.len() * 4);
        let mut bytes = Vec::new();
        for &id in ids {
            let piece =
                self.piece(id).ok_or(TokenizerError::UnknownId { id, vocab_size: self.vocab_size() })?;
            if let Some(b) = byte_piece_value(piece) {
                bytes.push(b);
                continue;
            }
            flush_bytes(&mut bytes, &mut text);
            for c in piece.chars() {
                text.push(if c == '\u{2581}' { ' ' } else { c });
            }
        }
        flush_bytes(&mut bytes, &mut text);
        Ok(text)
    }

    /// Where each of `ids` came from in `text`, as byte ranges, the way HF tokenizers reports
    /// offsets: a piece covers the text it was made of (a `▁` the space it replaced, or a
    /// literal `▁`), every `<0xNN>` piece of a character covers that whole character, and an
    /// added token found in the text (`<start_of_turn>`, a literal `<bos>`) covers its
    /// literal text. `ids` are [`Self::encode`]'s ids of `text`; when `specials` is true they
    /// start and end with the `<bos>`/`<eos>` this tokenizer adds, which come from no text
    /// and get `None`. Ids that do not line up with `text` get `None` from the first one that
    /// does not on, so the ranges are always inside `text` and on character boundaries.
    pub fn offsets(&self, text: &str, ids: &[u32], specials: bool) -> Vec<Option<std::ops::Range<usize>>> {
        let mut out = vec![None; ids.len()];
        let mut body = ids;
        let mut first = 0;
        if specials {
            if self.add_bos && self.bos.is_some() && body.first().copied() == self.bos {
                body = &body[1..];
                first = 1;
            }
            if self.add_eos && self.eos.is_some() && body.last().copied() == self.eos {
                body = &body[..body.len() - 1];
            }
        }
        let mut pos = 0;
        // The character a run of `<0xNN>` pieces spells, and how many of its bytes are left.
        let mut fallback: Option<(std::ops::Range<usize>, usize)> = None;
        for (slot, &id) in out[first..].iter_mut().zip(body) {
            let Some(piece) = self.piece(id) else { break };
            if byte_piece_value(piece).is_some() {
                let (range, left) = match fallback.take() {
                    Some(f) => f,
                    None => {
                        let Some(c) = text[pos..].chars().next() else { break };
                        (pos..pos + c.len_utf8(), c.len_utf8())
                    }
                };
                *slot = Some(range.clone());
                if left > 1 {
                    fallback = Some((range, left - 1));
                } else {
                    pos = range.end;
                }
                continue;
            }
            if fallback.is_some() {
                break; // A character's bytes cut short: not this text's encoding.
            }
            let start = pos;
            let mut lined_up = true;
            for c in piece.chars() {
                let rest = &text[pos..];
                if c == '\u{2581}' && rest.starts_with(' ') {
                    pos += 1;
                } else if rest.starts_with(c) {
                    pos += c.len_utf8();
                } else {
                    lined_up = false;
                    break;
                }
            }
            if !lined_up {
                break;
            }
            *slot = Some(start..pos);
        }
        out
    }

    fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        let mut scratch = self.pool.lock().pop().unwrap_or_default();
        let r = f(&mut scratch);
        let mut pool = self.pool.lock();
        if pool.len() < POOL_LIMIT {
            pool.push(scratch);
        }
        r
    }

    /// Content ids of `text` (no `<bos>`/`<eos>`), passed to `emit` in order.
    fn encode_content(&self, text: &str, scratch: &mut Scratch, mut emit: impl FnMut(u32)) {
        scratch.cache.claim(self.tables.tag);
        let bytes = text.as_bytes();
        let specials = &self.tables.specials;
        let mut seg_start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if specials.may_start(bytes[i])
                && let Some((id, len)) = specials.longest_at(bytes, i)
            {
                // Added-token texts are whole UTF-8 strings, so `i` and `i + len` are
                // character boundaries.
                self.encode_segment(&text[seg_start..i], scratch, &mut emit);
                emit(id);
                i += len;
                seg_start = i;
            } else {
                i += 1;
            }
        }
        self.encode_segment(&text[seg_start..], scratch, &mut emit);
    }

    /// BPE over one stretch of text free of added tokens. The pre-tokenizer of
    /// Gemma's `tokenizer.json` splits on `' '` after spaces became `▁`, so it never
    /// splits: the whole stretch is one word.
    fn encode_segment(&self, mut seg: &str, scratch: &mut Scratch, emit: &mut impl FnMut(u32)) {
        while seg.len() > MAX_SEGMENT {
            let mut cut = MAX_SEGMENT;
            while !seg.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = seg.split_at(cut);
            self.encode_word(head, scratch, emit);
            seg = tail;
        }
        self.encode_word(seg, scratch, emit);
    }

    /// Splits a BPE word at spaces where no merge can cross (see
    /// `Tables::split_after_ascii`) and encodes the chunks, through the word cache.
    fn encode_word(&self, word: &str, scratch: &mut Scratch, emit: &mut impl FnMut(u32)) {
        let t = &self.tables;
        if word.is_empty() {
            return;
        }
        if t.space_id == NONE {
            self.encode_chunk(word, scratch, emit);
            return;
        }
        let bytes = word.as_bytes();
        let mut start = 0;
        for i in 1..bytes.len() {
            // ' ' and the first byte of '▁' are leading bytes, so `i` is a char boundary.
            let b = bytes[i];
            let space = b == b' ' || (b == 0xE2 && bytes.get(i + 1..i + 3) == Some(&[0x96, 0x81][..]));
            if space && self.may_split_after(&word[..i]) {
                self.encode_chunk(&word[start..i], scratch, emit);
                start = i;
            }
        }
        self.encode_chunk(&word[start..], scratch, emit);
    }

    /// Whether a chunk may end with the last character of `head` when a space follows.
    #[inline]
    fn may_split_after(&self, head: &str) -> bool {
        let t = &self.tables;
        match head.chars().next_back() {
            Some(c) if c.is_ascii() => t.split_after_ascii[c as usize],
            Some(c) => c != '\u{2581}' && t.char_id(c) != NONE && !t.no_split_after.contains(&c),
            None => false,
        }
    }

    fn encode_chunk(&self, chunk: &str, scratch: &mut Scratch, emit: &mut impl FnMut(u32)) {
        let key = if self.tables.word_cache { WordCache::key(chunk) } else { None };
        if let Some(key) = key
            && let Some(ids) = scratch.cache.get(key, chunk)
        {
            ids.iter().for_each(|&id| emit(id));
            return;
        }
        scratch.ids.clear();
        self.bpe(chunk, &mut scratch.word, &mut scratch.ids);
        scratch.ids.iter().for_each(|&id| emit(id));
        if let Some(key) = key {
            scratch.cache.insert(key, chunk, &scratch.ids);
        }
    }

    /// HF's `BPE::merge_word` on `chunk`, ids appended to `out`.
    fn bpe(&self, chunk: &str, word: &mut Word, out: &mut Vec<u32>) {
        let t = &self.tables;
        word.clear();
        // A run of characters that neither are pieces nor have all their bytes as
        // `<0xNN>` pieces becomes one `<unk>`, emitted when the next character that is
        // a piece arrives (HF's `fuse_unk`, including its placement after any byte
        // pieces in between).
        let mut pending_unk: u32 = 0;
        for ch in chunk.chars() {
            let c = if ch == ' ' { '\u{2581}' } else { ch };
            let len = ch.len_utf8() as u32;
            let id = t.char_id(c);
            if id != NONE {
                if pending_unk > 0 {
                    self.push_unk(word, pending_unk);
                    pending_unk = 0;
                }
                word.push(id, len);
                continue;
            }
            let mut buf = [0u8; 4];
            let utf8 = c.encode_utf8(&mut buf).as_bytes();
            if utf8.iter().all(|&b| t.byte_ids[usize::from(b)] != NONE) {
                for &b in utf8 {
                    word.push(t.byte_ids[usize::from(b)], 1);
                }
            } else if self.unk.is_some() {
                pending_unk += len;
            }
        }
        if pending_unk > 0 {
            self.push_unk(word, pending_unk);
        }
        word.merge_and_emit(&t.merges, |id| out.push(id));
    }

    fn push_unk(&self, word: &mut Word, len: u32) {
        if let Some(unk) = self.unk {
            word.push(unk, len);
        }
    }

    /// The merge rule for the adjacent pair `(left, right)`: `(rank, merged id)`, lower
    /// ranks merging first. Rank `r` is line `r` of `tokenizer.json`'s merge list.
    pub fn merge_rule(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.tables.merges.get(&crate::bpe::pair_key(left, right)).map(|m| (m.rank, m.new_id))
    }

    /// Number of merge rules derived from the vocabulary.
    pub fn n_merges(&self) -> usize {
        self.tables.merges.len()
    }

    /// Number of tokens in the BPE model (the vocabulary without extra added tokens).
    pub fn model_vocab_size(&self) -> usize {
        self.tables.model_vocab
    }
}

/// The byte of a `<0xNN>` piece, by HF's `ByteFallback` decoder rule.
fn byte_piece_value(piece: &str) -> Option<u8> {
    if piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') {
        u8::from_str_radix(piece.get(3..5)?, 16).ok()
    } else {
        None
    }
}

fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    if bytes.is_empty() {
        return;
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => text.push_str(s),
        Err(_) => text.extend(std::iter::repeat_n('\u{FFFD}', bytes.len())),
    }
    bytes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids: 0 <bos>, 1 <eos>, 2 ▁, 3 a, 4 b, 5 >, 6 ab, 7 ▁ab, and in `with_gt` 8 >▁,
    /// which outranks every other merge.
    fn tiny(with_gt: bool) -> Tokenizer {
        let mut tokens = vec!["<bos>", "<eos>", "\u{2581}", "a", "b", ">", "ab", "\u{2581}ab"];
        if with_gt {
            tokens.push(">\u{2581}");
        }
        let n = tokens.len();
        Tokenizer::builder()
            .tokens(tokens)
            .scores((0..n).map(|i| if i == 8 { 1.0 } else { -(i as f32) }))
            .token_types((0..n).map(|i| if i < 2 { 3 } else { 1 }))
            .bos_id(0)
            .eos_id(1)
            .add_bos(true)
            .add_eos(true)
            .build()
            .expect("valid vocab")
    }

    #[test]
    fn words_are_not_cut_where_a_merge_crosses_the_space() {
        let (plain, gt) = (tiny(false), tiny(true));
        assert_eq!(plain.tables.no_split_after, Vec::<char>::new());
        assert_eq!(gt.tables.no_split_after, vec!['>']);
        assert!(!gt.tables.split_after_ascii[usize::from(b'>')]);
        assert!(gt.tables.split_after_ascii[usize::from(b'a')]);
        assert_eq!(plain.encode("ab> ab"), vec![0, 6, 5, 7, 1]);
        assert_eq!(gt.encode("ab> ab"), vec![0, 6, 8, 6, 1]);
    }

    #[test]
    fn a_scratch_shared_by_two_tokenizers_does_not_leak_cached_words() {
        let (plain, gt) = (tiny(false), tiny(true));
        let (mut scratch, mut out) = (Scratch::new(), Vec::new());
        for _ in 0..2 {
            plain.encode_into_with("> ab", &mut out, &mut scratch);
            assert_eq!(out, vec![0, 5, 7, 1]);
            gt.encode_into_with("> ab", &mut out, &mut scratch);
            assert_eq!(out, vec![0, 8, 6, 1]);
        }
    }
}
