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
    /// One input of the call cannot be embedded; nothing of the call was computed.
    #[error("text {index}: {source}")]
    Text {
        /// Position of the input in the call (0-based).
        index: usize,
        /// What is wrong with it.
        #[source]
        source: TextError,
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
    /// The caller's stop condition held (see [`Embedder::embed_with_options_until`](crate::Embedder::embed_with_options_until)):
    /// the call gave up within a layer's time, its vectors unfinished and not returned.
    #[error("the call was stopped before it finished")]
    Stopped,
}

/// Why one input cannot be embedded. Checked when the input is tokenized, before any work, so a
/// caller can refuse that input alone (the server answers its request with a 4xx).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TextError {
    /// Longer than the model's context and the truncation policy is
    /// [`Truncation::Error`](crate::Truncation::Error).
    #[error("{tokens} tokens, more than the model's context of {limit}")]
    TooLong {
        /// Token ids it would need (with `<bos>`, `<eos>` and the prompt).
        tokens: usize,
        /// The model's context length.
        limit: usize,
    },
    /// A token id the model has no embedding for. Text can produce one: Gemma's tokenizer knows
    /// `<image_soft_token>` (id 262144, as HF tokenizers gives it) but the embedding matrix has
    /// 262144 rows, so the reference model cannot embed it either.
    #[error("token id {id} is outside the model's vocabulary of {vocab}{}", piece.as_ref().map(|p| format!(" (the text contains {p:?}, which this model cannot embed)")).unwrap_or_default())]
    IdOutOfVocab {
        /// The id.
        id: u32,
        /// Rows of the model's embedding matrix.
        vocab: usize,
        /// The token's text, when the id came from tokenizing text.
        piece: Option<String>,
    },
    /// No ids at all (a file whose tokenizer adds neither `<bos>` nor `<eos>`, given an empty
    /// string, or an empty id list).
    #[error("no tokens")]
    Empty,
    /// A prompt was asked for a token-id input; ids are used as given.
    #[error("a prompt applies to text inputs only; token ids are used as given")]
    PromptWithIds,
}
