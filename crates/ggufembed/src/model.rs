//! Which model a command uses: the one named with `--model`, else the default model from the
//! cache, fetched (with progress on standard error) on first use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub fn resolve(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = model {
        check_file(path, "model")?;
        return Ok(path.to_owned());
    }
    let store = model_fetch::ModelStore::open_default().context("cannot find a cache directory for the default model")?;
    let bars = crate::progress::Bars::new(false);
    if !store.gguf_path(model_fetch::OutType::Q8_0).exists() {
        eprintln!(
            "ggufembed: the default model is not cached yet; fetching it into {} (about 1.1 GB, once)",
            store.root().display()
        );
    }
    store
        .ensure_gguf(model_fetch::OutType::Q8_0, &bars)
        .context("cannot fetch the default model (set GGUFEMBED_HOME to choose the cache, or pass --model)")
}

/// Checked before anything is mapped, so a typo or a folder fails with the path and a plain
/// reason (mapping a directory says only "No such device").
pub fn check_file(path: &Path, what: &str) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if meta.is_dir() {
        bail!("{what} {} is a directory, not a GGUF file", path.display());
    }
    if !meta.is_file() {
        bail!("{what} {} is not a regular file (a GGUF model is memory-mapped)", path.display());
    }
    Ok(())
}
