//! The on-disk cache of derived merge ranks ([`crate::TokenizerBuilder::build_cached`]).
//!
//! Deriving Gemma's 514,906 ranks means about two million string-keyed lookups into a map of
//! 262,144 pieces and a sort, around 0.2 s, which a process pays on every start; reading them
//! back is one read of 6 MB and two SHA-256 passes. The file is never trusted blindly: it is
//! named after a fingerprint of the vocabulary and repeats it, carries a format version and a
//! checksum over everything before it, and every id is range-checked before use.
//!
//! Layout, little-endian:
//!
//! ```text
//! 0   magic "BPEMERGE"
//! 8   format version (u32)
//! 12  vocabulary size n (u32)
//! 16  fingerprint: SHA-256 of the checked vocabulary (32 bytes)
//! 48  number of merges m (u32)
//! 52  number of no-split characters c (u32)
//! 56  m × [left, right, merged] (u32 each), in rank order
//! ..  c × char (u32)
//! ..  SHA-256 of all the bytes before it (32 bytes)
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::builder::{Derived, Vocab};
use crate::error::CacheError;

const MAGIC: &[u8; 8] = b"BPEMERGE";
/// Bumped whenever the layout or the derivation's result changes, so an old file is rebuilt.
pub(crate) const VERSION: u32 = 1;
const HEADER: usize = 56;
const CHECKSUM: usize = 32;

/// Which way [`crate::TokenizerBuilder::build_cached`] got the merge ranks.
#[derive(Debug)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Read from a valid cache file.
    Loaded,
    /// Derived from the vocabulary because the cache file could not be used (`why`),
    /// then written (`write` is the outcome; an error there is not a build error).
    Derived {
        /// Why the file was not used ([`CacheError::Absent`] on a first run).
        why: CacheError,
        /// Whether the fresh file was written.
        write: Result<(), std::io::Error>,
    },
}

/// SHA-256 of everything the ranks are derived from.
pub(crate) fn fingerprint(vocab: &Vocab) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"bpe-tokenizer vocabulary\0");
    h.update((vocab.n as u64).to_le_bytes());
    h.update((vocab.pieces.len() as u64).to_le_bytes());
    h.update(vocab.pieces.as_bytes());
    // One update per array: per-element updates would cost more than the hashing.
    let mut buf = Vec::with_capacity(4 * vocab.offsets.len());
    buf.extend(vocab.offsets.iter().flat_map(|o| o.to_le_bytes()));
    h.update(&buf);
    buf.clear();
    buf.extend(vocab.scores.iter().flat_map(|s| s.to_bits().to_le_bytes()));
    h.update(&buf);
    buf.clear();
    buf.extend(vocab.types.iter().map(|&t| t as u8));
    h.update(&buf);
    h.finalize().into()
}

/// `dir/bpe-merges-<fingerprint>.bin`.
pub(crate) fn path(dir: &Path, fingerprint: &[u8; 32]) -> PathBuf {
    let hex: String = fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("bpe-merges-{hex}.bin"))
}

/// The file's bytes for `derived`.
pub(crate) fn encode(fingerprint: &[u8; 32], derived: &Derived, n: usize) -> Vec<u8> {
    let len = HEADER + 12 * derived.ranked.len() + 4 * derived.no_split_after.len() + CHECKSUM;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&(derived.ranked.len() as u32).to_le_bytes());
    out.extend_from_slice(&(derived.no_split_after.len() as u32).to_le_bytes());
    out.extend(derived.ranked.iter().flatten().flat_map(|v| v.to_le_bytes()));
    out.extend(derived.no_split_after.iter().flat_map(|&c| u32::from(c).to_le_bytes()));
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Parses and checks a cache file's bytes for the vocabulary `fingerprint` of `n` pieces.
pub(crate) fn decode(bytes: &[u8], fingerprint: &[u8; 32], n: usize) -> Result<Derived, CacheError> {
    let actual = bytes.len() as u64;
    if bytes.len() < HEADER + CHECKSUM {
        return Err(CacheError::Length { expected: (HEADER + CHECKSUM) as u64, actual });
    }
    if &bytes[..8] != MAGIC {
        return Err(CacheError::Magic);
    }
    let version = u32_at(bytes, 8);
    if version != VERSION {
        return Err(CacheError::Version { found: version, expected: VERSION });
    }
    let (m, c) = (u64::from(u32_at(bytes, 48)), u64::from(u32_at(bytes, 52)));
    // u64 arithmetic: two u32 counts cannot overflow it.
    let expected = (HEADER + CHECKSUM) as u64 + 12 * m + 4 * c;
    if expected != actual {
        return Err(CacheError::Length { expected, actual });
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if Sha256::digest(body).as_slice() != sum {
        return Err(CacheError::Checksum);
    }
    if u32_at(bytes, 12) as usize != n || &bytes[16..48] != fingerprint {
        return Err(CacheError::Stale);
    }
    let (m, c) = (m as usize, c as usize);
    let mut ranked = Vec::with_capacity(m);
    for (index, e) in body[HEADER..HEADER + 12 * m].chunks_exact(12).enumerate() {
        let entry = [u32_at(e, 0), u32_at(e, 4), u32_at(e, 8)];
        if let Some(&id) = entry.iter().find(|&&id| id as usize >= n) {
            return Err(CacheError::IdOutOfRange { index, id, vocab_size: n });
        }
        ranked.push(entry);
    }
    let mut no_split_after = Vec::with_capacity(c);
    for (index, w) in body[HEADER + 12 * m..].chunks_exact(4).enumerate() {
        let value = u32_at(w, 0);
        no_split_after.push(char::from_u32(value).ok_or(CacheError::BadChar { index, value })?);
    }
    Ok(Derived { ranked, no_split_after })
}

/// Reads `path` (one read) and checks it.
pub(crate) fn read(path: &Path, fingerprint: &[u8; 32], n: usize) -> Result<Derived, CacheError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CacheError::Absent,
        _ => CacheError::Io(e),
    })?;
    decode(&bytes, fingerprint, n)
}

/// Writes `bytes` to `path` through a temporary file in `dir` renamed into place, so a
/// reader sees the old file, no file or the whole new one (and the checksum catches a file
/// torn by a crash before the data reached the disk).
pub(crate) fn write(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("bpe-merges");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes)).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
