//! Which model a command uses: the one named with `--model`, else the default model from the
//! cache, fetched (with progress bars) on first use.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub fn resolve(model: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = model {
        // Checked here so a typo fails before any input is processed, with the path in the message.
        std::fs::metadata(path).with_context(|| format!("model {}", path.display()))?;
        return Ok(path.to_owned());
    }
    let store = model_fetch::ModelStore::open_default().context("cannot find a cache directory for the default model")?;
    let bars = crate::progress::Bars::new(false);
    store
        .ensure_gguf(model_fetch::OutType::Q8_0, &bars)
        .context("cannot fetch the default model (set GGUFEMBED_HOME to choose the cache, or pass --model)")
}
