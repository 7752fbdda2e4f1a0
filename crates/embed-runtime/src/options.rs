//! Per-call request options: the one definition of prompt, output dimension, normalisation and
//! truncation that the CLI, the server and the Python binding translate their own syntax into.
//!
//! The forward pass does not depend on any of them: the prompt and truncation decide which ids
//! go in, the dimension and normalisation decide what comes out. So texts with different options
//! share one forward pass (the server batches requests that differ in all four).

use crate::error::EmbedError;
use crate::prompt::Prompt;

/// The Matryoshka dimensions EmbeddingGemma was trained to support (768 being the full vector).
pub const MATRYOSHKA_DIMS: [usize; 4] = [768, 512, 256, 128];

/// An output dimension the model was trained for: one of [`MATRYOSHKA_DIMS`]. Built only through
/// [`Dims::new`], so an `EmbedOptions` can never hold a size the model cannot produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims(u16);

impl Dims {
    /// The full 768-dimensional vector.
    pub const FULL: Dims = Dims(768);

    /// `n` if it is one of [`MATRYOSHKA_DIMS`], else [`EmbedError::InvalidOption`] naming them.
    pub fn new(n: usize) -> Result<Dims, EmbedError> {
        if MATRYOSHKA_DIMS.contains(&n) {
            Ok(Dims(n as u16))
        } else {
            Err(EmbedError::InvalidOption(format!(
                "dimension {n} is not one of the model's Matryoshka sizes {MATRYOSHKA_DIMS:?}"
            )))
        }
    }

    /// The number of values in each vector.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for Dims {
    fn default() -> Self {
        Dims::FULL
    }
}

/// What to do with a text longer than the model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Truncation {
    /// Keep `<bos>`, the first `context − 2` content ids and `<eos>` (what sentence-transformers
    /// does), and report it in [`Embeddings::truncated`](crate::Embeddings::truncated).
    #[default]
    Right,
    /// Keep `<bos>`, the *last* `context − 2` content ids and `<eos>` (TEI's
    /// `truncation_direction: "Left"`), and report it.
    Left,
    /// Fail the text with [`TextError::TooLong`](crate::TextError::TooLong).
    Error,
}

/// Options for one call, or for one text of a batch whose texts differ.
///
/// [`EmbedOptions::default`] is sentence-transformers' behaviour for this model: no prompt, 768
/// dimensions, right truncation. An [`Embedder`](crate::Embedder)'s builder settings form its
/// default options ([`Embedder::options`](crate::Embedder::options)); a call may override them.
///
/// ```
/// use embed_runtime::{Dims, EmbedOptions, Prompt, Truncation};
/// let opts = EmbedOptions::default()
///     .with_prompt(Prompt::named("query").unwrap())
///     .with_dims(Dims::new(256).unwrap())
///     .with_normalize(true)
///     .with_truncation(Truncation::Error);
/// assert_eq!(opts.dims().get(), 256);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmbedOptions {
    prompt: Prompt,
    dims: Dims,
    normalize: bool,
    truncation: Truncation,
}

impl EmbedOptions {
    /// The prompt put in front of every text (token-id inputs take none).
    pub fn with_prompt(mut self, prompt: Prompt) -> Self {
        self.prompt = prompt;
        self
    }

    /// The output dimension: a Matryoshka prefix of the full vector.
    pub fn with_dims(mut self, dims: Dims) -> Self {
        self.dims = dims;
        self
    }

    /// Whether a Matryoshka prefix is scaled back to unit length (OpenAI's `dimensions` and
    /// TEI's `normalize` do this; sentence-transformers' `truncate_dim` does not). The full
    /// 768-d vector is unit length either way: the model ends in a normalisation layer.
    pub fn with_normalize(mut self, yes: bool) -> Self {
        self.normalize = yes;
        self
    }

    /// What to do with a text longer than the context.
    pub fn with_truncation(mut self, truncation: Truncation) -> Self {
        self.truncation = truncation;
        self
    }

    /// The prompt.
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The output dimension.
    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// Whether prefixes are renormalised.
    pub fn normalize(&self) -> bool {
        self.normalize
    }

    /// The truncation policy.
    pub fn truncation(&self) -> Truncation {
        self.truncation
    }
}

/// One input: text (the prompt is prepended, then it is tokenized) or token ids (used as given:
/// `<bos>` is put in front and `<eos>` after unless they are already there, no prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input<'a> {
    /// A text.
    Text(&'a str),
    /// Token ids from this model's vocabulary (e.g. from the OpenAI API's array-of-ids input).
    Ids(&'a [u32]),
}

impl<'a> From<&'a str> for Input<'a> {
    fn from(s: &'a str) -> Self {
        Input::Text(s)
    }
}

impl<'a> From<&'a String> for Input<'a> {
    fn from(s: &'a String) -> Self {
        Input::Text(s)
    }
}

impl<'a> From<&'a [u32]> for Input<'a> {
    fn from(ids: &'a [u32]) -> Self {
        Input::Ids(ids)
    }
}

/// One input tokenized and checked, with the options that shape its output: what
/// [`Embedder::prepare`](crate::Embedder::prepare) returns and
/// [`Embedder::embed_prepared`](crate::Embedder::embed_prepared) runs. Preparing is cheap
/// (tokenization only) and cannot fail later: once prepared, a text will be embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub(crate) ids: Vec<u32>,
    pub(crate) untruncated: usize,
    pub(crate) dims: Dims,
    pub(crate) normalize: bool,
}

impl Prepared {
    /// The ids that go into the model (`<bos>`, `<eos>` and any prompt included, after
    /// truncation).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Number of ids that go into the model.
    pub fn tokens(&self) -> usize {
        self.ids.len()
    }

    /// Whether ids were dropped to fit the context.
    pub fn truncated(&self) -> bool {
        self.untruncated > self.ids.len()
    }

    /// Ids the input had before truncation.
    pub fn untruncated_tokens(&self) -> usize {
        self.untruncated
    }

    /// The output dimension.
    pub fn dims(&self) -> Dims {
        self.dims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_matryoshka_sizes_are_dims() {
        for n in MATRYOSHKA_DIMS {
            assert_eq!(Dims::new(n).unwrap().get(), n);
        }
        for n in [0, 1, 100, 300, 767, 769, 1024, usize::MAX] {
            let e = Dims::new(n).unwrap_err().to_string();
            assert!(e.contains(&n.to_string()) && e.contains("[768, 512, 256, 128]"), "{e}");
        }
    }

    #[test]
    fn defaults_are_sentence_transformers() {
        let o = EmbedOptions::default();
        assert_eq!(o.prompt(), &Prompt::None);
        assert_eq!(o.dims(), Dims::FULL);
        assert!(!o.normalize());
        assert_eq!(o.truncation(), Truncation::Right);
    }
}
