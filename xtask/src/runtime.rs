//! The runtime under test, behind the harness's [`Engine`] trait.

use std::path::{Path, PathBuf};

use anyhow::Context;
use embed_runtime::{Embedder, Parallelism};

use crate::engine::{Engine, Mode};

/// The model to measure: the one given, else the default Q8_0 model from the cache (fetched and
/// converted on first use, as the library does).
pub fn resolve_model(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => {
            eprintln!("no --model: using the default Q8_0 model (fetched and converted into the cache on first use)");
            embed_runtime::default_model_path().context("fetching the default model")
        }
    }
}

/// An embedder with `threads` workers on `model`.
pub fn open(model: &Path, threads: usize) -> anyhow::Result<Box<dyn Engine>> {
    let embedder = Embedder::builder()
        .model(model)
        .threads(threads)
        .build()
        .with_context(|| format!("loading {}", model.display()))?;
    Ok(Box::new(Runtime { embedder }))
}

struct Runtime {
    embedder: Embedder,
}

fn parallelism(mode: Mode) -> Parallelism {
    match mode {
        Mode::Fine => Parallelism::Fine,
        Mode::Coarse => Parallelism::Coarse,
        Mode::Auto => Parallelism::Auto,
    }
}

impl Engine for Runtime {
    fn threads(&self) -> usize {
        self.embedder.threads()
    }

    fn isa(&self) -> String {
        self.embedder.isa().name().to_string()
    }

    fn embed(&self, texts: &[&str], mode: Mode) -> anyhow::Result<usize> {
        let out = self.embedder.embed_with(texts, parallelism(mode))?;
        Ok(out.token_counts().iter().sum())
    }

    fn resolve(&self, texts: &[&str], mode: Mode) -> Mode {
        match mode {
            Mode::Auto => match self.embedder.plan(texts) {
                Parallelism::Fine => Mode::Fine,
                _ => Mode::Coarse,
            },
            m => m,
        }
    }

    fn vectors(&self, texts: &[&str]) -> anyhow::Result<Vec<Vec<f32>>> {
        let out = self.embedder.embed(texts)?;
        Ok(out.iter().map(<[f32]>::to_vec).collect())
    }

    fn token_count(&self, text: &str) -> anyhow::Result<usize> {
        Ok(self.embedder.tokenizer().count_ids(text))
    }
}
