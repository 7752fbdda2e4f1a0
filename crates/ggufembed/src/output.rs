//! Where results go: standard output, or a file that appears only when complete.
//!
//! A file output is written under a temporary name in the same directory and renamed when the
//! command succeeds; on any error the temporary file is removed, so a failed run never leaves
//! a truncated file that looks finished.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An output sink; call [`Output::commit`] when everything is written.
pub enum Output {
    Stdout(BufWriter<io::Stdout>),
    File {
        tmp: Option<tempfile::NamedTempFile>,
        out: BufWriter<File>,
        path: PathBuf,
    },
}

impl Output {
    pub fn open(path: Option<&Path>) -> Result<Output> {
        let Some(path) = path else {
            return Ok(Output::Stdout(BufWriter::new(io::stdout())));
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".ggufembed-")
            .suffix(".partial")
            .tempfile_in(dir)
            .with_context(|| format!("cannot create a file in {}", dir.display()))?;
        let out = BufWriter::new(tmp.as_file().try_clone().context("cannot open output")?);
        Ok(Output::File {
            tmp: Some(tmp),
            out,
            path: path.to_owned(),
        })
    }

    /// Flushes and, for a file, moves it into place.
    pub fn commit(self) -> Result<()> {
        match self {
            Output::Stdout(mut w) => w.flush().context("cannot write to standard output"),
            Output::File { mut tmp, mut out, path } => {
                out.flush().with_context(|| format!("cannot write {}", path.display()))?;
                let tmp = tmp.take().expect("committed once");
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("cannot write {}", path.display()))?;
                tmp.persist(&path)
                    .with_context(|| format!("cannot move output into place at {}", path.display()))?;
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Output::Stdout(w) => w.write(buf),
            Output::File { out, .. } => out.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Stdout(w) => w.flush(),
            Output::File { out, .. } => out.flush(),
        }
    }
}

/// The header of a version 1.0 `.npy` file holding a C-order little-endian f32 matrix.
pub fn npy_header(rows: usize, cols: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + dict + padding + '\n', a multiple of 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut h = Vec::with_capacity(total);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h.resize(total - 1, b' ');
    h.push(b'\n');
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parses() {
        let h = npy_header(3, 768);
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([h[8], h[9]]) as usize;
        assert_eq!(len + 10, h.len());
        let dict = std::str::from_utf8(&h[10..]).unwrap();
        assert!(dict.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 768), }"));
        assert!(dict.ends_with('\n'));
    }

    #[test]
    fn a_file_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut o = Output::open(Some(&path)).unwrap();
        o.write_all(b"partial").unwrap();
        drop(o); // an error path: never committed
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary file removed");
        let mut o = Output::open(Some(&path)).unwrap();
        o.write_all(b"done\n").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "done\n");
    }
}
