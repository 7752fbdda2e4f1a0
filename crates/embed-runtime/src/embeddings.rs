//! The result of one `embed` call.

/// Vectors for a batch of texts: a contiguous row-major matrix, one row per input text in input
/// order, plus what happened to each text on the way in.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dim: usize,
    data: Vec<f32>,
    tokens: Vec<usize>,
    truncated: Vec<bool>,
}

impl Embeddings {
    pub(crate) fn new(dim: usize, data: Vec<f32>, tokens: Vec<usize>, truncated: Vec<bool>) -> Self {
        debug_assert_eq!(data.len(), dim * tokens.len());
        debug_assert_eq!(tokens.len(), truncated.len());
        Embeddings {
            dim,
            data,
            tokens,
            truncated,
        }
    }

    /// Number of texts (rows).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when the call embedded no texts.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Length of each vector (768, or the Matryoshka dimension asked for).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The vector of text `i`.
    ///
    /// # Panics
    /// When `i >= self.len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All vectors, one after another (`len() × dim()` values, row-major).
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Iterates over the vectors in input order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[f32]> + '_ {
        // `max(1)` keeps `chunks_exact` well-defined for a zero-dimension matrix, which cannot be
        // built through the public API but costs nothing to guard.
        self.data.chunks_exact(self.dim.max(1))
    }

    /// Token ids that went into the model for each text (`<bos>`, `<eos>` and any prompt
    /// included, after truncation).
    pub fn token_counts(&self) -> &[usize] {
        &self.tokens
    }

    /// Whether each text was cut to fit the model's context.
    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }

    /// Takes the matrix out (row-major, `len() × dim()`).
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
}
