//! The crate's error types: one for loading, one for the caller's inputs to a forward pass.

use gguf_format::GgufError;
use quant_kernels::{Isa, KernelError};

/// Why a GGUF file could not be loaded as an EmbeddingGemma model.
///
/// Every shape, type and hyper-parameter is checked here, once; a model that loads cannot fail
/// in the forward pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// The file could not be opened or is not valid GGUF.
    #[error("reading gguf: {0}")]
    Gguf(#[source] GgufError),
    /// `general.architecture` names another model family.
    #[error("architecture is {found:?}, expected \"gemma-embedding\"")]
    WrongArchitecture {
        /// The architecture the file declares.
        found: String,
    },
    /// A required metadata key is absent.
    #[error("missing metadata key {key}")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata key is present but its value has the wrong type or does not fit.
    #[error("metadata key {key}: {source}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What the reader reported.
        #[source]
        source: GgufError,
    },
    /// A hyper-parameter has a value this implementation does not compute with.
    #[error("unsupported gemma-embedding.{key} = {value}: {reason}")]
    UnsupportedConfig {
        /// The key (or derived quantity).
        key: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A hyper-parameter is outside its plausible range, or disagrees with the tensors present.
    #[error("metadata key {key} = {value}: {reason}")]
    InvalidConfig {
        /// The full key (`gemma-embedding.block_count`).
        key: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file holds a tensor this architecture does not use: another model, or a corrupt one.
    #[error("tensor {name} is not part of a gemma-embedding model")]
    UnexpectedTensor {
        /// The tensor name.
        name: String,
    },
    /// A norm weight holds NaN or infinity (damaged data).
    #[error("tensor {name}: value {index} is not finite")]
    NonFinite {
        /// The tensor name.
        name: String,
        /// Position of the first bad value.
        index: usize,
    },
    /// A tensor the model needs is absent.
    #[error("missing tensor {name}")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor has the wrong dimensions (ggml order, `ne0` first).
    #[error("tensor {name}: shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor name.
        name: String,
        /// The shape the hyper-parameters imply.
        expected: Vec<u64>,
        /// The shape in the file.
        got: Vec<u64>,
    },
    /// A tensor's element type cannot be used where it appears.
    #[error("tensor {name}: element type {ty} is not supported here")]
    UnsupportedType {
        /// The tensor name.
        name: String,
        /// ggml's name of the type.
        ty: String,
    },
    /// The requested instruction set is not available on this CPU.
    #[error("instruction set {isa} is not supported on this cpu")]
    UnsupportedIsa {
        /// The requested level.
        isa: Isa,
    },
    /// The kernels rejected a tensor while preparing it (should not happen after the checks
    /// above; reported rather than hidden).
    #[error("preparing tensor {name}: {source}")]
    Kernel {
        /// The tensor name.
        name: String,
        /// What the kernels reported.
        #[source]
        source: KernelError,
    },
}

/// A caller's input that a forward pass cannot compute with. Checked before any work is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// A text has no tokens (a real text has at least `<bos>` and `<eos>`).
    #[error("text {text} has no tokens")]
    EmptyText {
        /// Index of the text in the batch.
        text: usize,
    },
    /// A text is longer than the model's context.
    #[error("text {text} has {tokens} tokens, the model takes at most {max}")]
    TextTooLong {
        /// Index of the text in the batch.
        text: usize,
        /// Its length.
        tokens: usize,
        /// The context length.
        max: usize,
    },
    /// A token id is not in the vocabulary.
    #[error("text {text}, position {position}: token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// Index of the text in the batch.
        text: usize,
        /// Position of the token in the text.
        position: usize,
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// The output slice does not hold `texts × embedding_dim` values.
    #[error("output holds {got} values, expected {expected}")]
    OutputLength {
        /// `texts × embedding_dim`.
        expected: usize,
        /// The slice length.
        got: usize,
    },
}
