//! The model used when none is named: EmbeddingGemma-300M as Q8_0, fetched and converted into
//! the cache on first use (see `model-fetch`).

use std::path::PathBuf;

use crate::error::EmbedError;

/// Path of the default model, fetching and converting it first if the cache lacks it.
///
/// The cache is `$GGUFEMBED_HOME`, else the platform cache directory. Progress is not shown;
/// the CLI's `fetch` command shows it.
pub fn default_model_path() -> Result<PathBuf, EmbedError> {
    let store = model_fetch::ModelStore::open_default()?;
    Ok(store.ensure_gguf(model_fetch::OutType::Q8_0, &model_fetch::NoProgress)?)
}
