//! The crate's error type.

use std::path::PathBuf;

use thiserror::Error;

use crate::sentencepiece::SentencePieceError;

/// Why a conversion failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the conversion needs is absent.
    #[error("missing file {path}")]
    MissingFile {
        /// The expected location.
        path: PathBuf,
    },
    /// A JSON file could not be parsed, or lacks a field of the expected type.
    #[error("invalid JSON in {path}: {message}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// `config.json` names an architecture this converter does not handle.
    #[error("unsupported architecture {found:?} (expected Gemma3TextModel)")]
    UnsupportedArchitecture {
        /// The `architectures` list found.
        found: Vec<String>,
    },
    /// A safetensors header is invalid.
    #[error("invalid safetensors file {path}: {message}")]
    Safetensors {
        /// The file involved.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A tensor has a dtype the converter cannot read.
    #[error("tensor {tensor} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A checkpoint tensor has no GGUF name.
    #[error("tensor {name} has no gemma-embedding GGUF name")]
    UnknownTensor {
        /// The checkpoint name.
        name: String,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The GGUF name of the tensor.
        name: String,
    },
    /// A tensor's shape disagrees with `config.json`.
    #[error("tensor {name} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint name.
        name: String,
        /// Shape expected from the hyper-parameters (row-major, outermost first).
        expected: Vec<usize>,
        /// Shape found.
        found: Vec<usize>,
    },
    /// The token embedding has fewer rows than the vocabulary.
    #[error("token embedding has {rows} rows but the vocabulary has {vocab} tokens")]
    EmbeddingTooSmall {
        /// Rows in `embed_tokens.weight`.
        rows: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// `tokenizer.model` could not be decoded.
    #[error("invalid tokenizer.model: {0}")]
    SentencePiece(#[from] SentencePieceError),
    /// A tensor could not be quantized to its output type.
    #[error("quantizing {name}: {source}")]
    Quantize {
        /// The GGUF name of the tensor.
        name: String,
        /// The quantizer's error.
        source: quant_kernels::KernelError,
    },
    /// The GGUF writer rejected the output.
    #[error("writing GGUF: {0}")]
    Gguf(#[from] gguf_format::GgufError),
}

impl ConvertError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ConvertError::Io { path, source }
    }

    pub(crate) fn json(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ConvertError::Json { path: path.into(), message: message.to_string() }
    }
}
