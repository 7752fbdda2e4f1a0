//! Errors of the public API.

use std::path::PathBuf;

/// What went wrong in building an [`Embedder`](crate::Embedder) or in one `embed` call.
///
/// A failed call loses nothing: the `Embedder` stays usable and no partial result is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The model file could not be opened or parsed as GGUF.
    #[error("cannot read model {path}: {source}")]
    ModelFile {
        /// The file given.
        path: PathBuf,
        /// What the GGUF reader said.
        #[source]
        source: gguf_format::GgufError,
    },
    /// The GGUF parsed but is not a usable EmbeddingGemma model.
    #[error("cannot load model {path}: {source}")]
    Model {
        /// The file given.
        path: PathBuf,
        /// What the model loader said (boxed: it carries names and shapes, and would make
        /// every `Result` of this crate large).
        #[source]
        source: Box<gemma_model::ModelError>,
    },
    /// The tokenizer described by the GGUF's `tokenizer.ggml.*` keys is unusable.
    #[error("cannot build tokenizer from {path}: {reason}")]
    Tokenizer {
        /// The file given.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No model path was given and the default model could not be fetched.
    #[error("cannot fetch the default model: {0}")]
    Fetch(#[from] model_fetch::FetchError),
    /// An option is out of range (e.g. a Matryoshka dimension the model was not trained for).
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A text is longer than the model's context and the truncation policy is `Error`.
    #[error("text {index} has {tokens} tokens, more than the model's {limit}")]
    TooLong {
        /// Position of the text in the batch.
        index: usize,
        /// Token ids it would need (with `<bos>`, `<eos>` and the prompt).
        tokens: usize,
        /// The model's context length.
        limit: usize,
    },
    /// The tokenizer produced no ids for a text (a file whose tokenizer adds neither `<bos>`
    /// nor `<eos>`, given an empty string).
    #[error("text {index} has no tokens")]
    EmptyInput {
        /// Position of the text in the batch.
        index: usize,
    },
    /// The model rejected the token ids (cannot happen with the file's own tokenizer).
    #[error("model input rejected: {0}")]
    Input(#[source] gemma_model::InputError),
    /// A worker thread panicked while embedding this batch; the `Embedder` remains usable.
    #[error("embedding worker panicked: {0}")]
    WorkerPanic(String),
    /// The worker pool could not be started.
    #[error("cannot start worker threads: {0}")]
    Pool(String),
}
