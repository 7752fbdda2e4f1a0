//! SHA-256 of files and streams, with progress.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::FetchError;
use crate::progress::Progress;

const BUF: usize = 1 << 20;

/// Hex SHA-256 and length of the file at `path`; `progress.set` receives `base + bytes read`.
pub(crate) fn sha256_file(path: &Path, progress: &dyn Progress, base: u64) -> Result<(String, u64), FetchError> {
    let mut file = File::open(path).map_err(FetchError::at(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n_total = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(FetchError::at(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
        progress.set(base + n_total);
    }
    Ok((hex::encode(hasher.finalize()), n_total))
}

/// Copies `reader` to `out` while hashing; returns hex SHA-256 and length. Errors reading are
/// attributed to `src`, errors writing to `dst`.
pub(crate) fn copy_hashed(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    src: &Path,
    dst: &Path,
    progress: &dyn Progress,
    base: u64,
) -> Result<(String, u64), FetchError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut n_total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(FetchError::at(src))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(FetchError::at(dst))?;
        n_total += n as u64;
        progress.set(base + n_total);
    }
    Ok((hex::encode(hasher.finalize()), n_total))
}


/// Fails with [`FetchError::HashMismatch`] unless `actual == expected`.
pub(crate) fn expect_hash(file: &Path, expected: &str, actual: &str) -> Result<(), FetchError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(FetchError::HashMismatch { file: file.to_path_buf(), expected: expected.to_owned(), actual: actual.to_owned() })
    }
}
