//! Convert the sentence-transformers EmbeddingGemma folder to GGUF.
//!
//! The output is the file llama.cpp's `convert_hf_to_gguf.py --sentence-transformers-dense-modules`
//! writes for the same folder (architecture `gemma-embedding`): the same keys in the same order
//! with the same value types, the same tensors in the same order with the same shapes, types and
//! bytes. Matching llama.cpp rather than inventing a dialect means one loader serves our files
//! and the published ggml-org / unsloth GGUFs alike, and lets a test compare our layout with the
//! reference layout line by line.
//!
//! Design:
//! - A plan comes first: every key and tensor is decided from headers and small JSON files
//!   before any tensor data is read, so malformed input fails fast and nothing half-written
//!   is left behind.
//! - Tensor data is streamed: each tensor is read in bounded row chunks, transformed (norm
//!   weights `+ 1`), encoded (F32, F16, BF16, or Q8_0 / Q4_K / Q5_0 / Q6_K via quant-kernels'
//!   bit-exact reference quantizers) and written; peak memory is about 230 MB whatever the output type (mostly the parsed
//!   `tokenizer.json` and the 262,144-entry vocabulary), not the 1.2 GB of weights.
//! - The output goes to a temporary file beside the target and is renamed into place only
//!   when complete, so a crash never leaves a truncated GGUF under the final name.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod error;
mod metadata;
mod plan;
pub mod sentencepiece;
mod source;
mod tensors;
mod vocab;
mod write;

use std::path::{Path, PathBuf};

pub use error::ConvertError;
pub use metadata::{EMBEDDINGGEMMA_MODEL_ID, GeneralMetadata, KvValue};
pub use plan::ARCH;
pub use source::{DenseModule, HParams, Modules, PoolingType};
pub use tensors::TensorType;
pub use vocab::{SpecialTokens, Vocab, token_type};

/// Changes whenever the bytes written for the same input change, so caches of converted files
/// (model-fetch) know to convert again.
pub const OUTPUT_REVISION: &str = "gemma-convert-1";

/// The output type, as llama.cpp's `--outtype`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutType {
    /// Every tensor F32 (`general.file_type` 0).
    F32,
    /// Matrices F16, vectors F32 (`general.file_type` 1).
    F16,
    /// Matrices BF16, vectors F32 (`general.file_type` 32).
    BF16,
    /// Matrices Q8_0, vectors F32 (`general.file_type` 7).
    Q8_0,
    /// llama.cpp's `llama-quantize Q4_K_M` mixture of the F32 file (`general.file_type` 15):
    /// matrices Q4_K, the token embedding Q6_K, and `attn_v` / `ffn_down` Q6_K in the layers
    /// llama.cpp's `use_more_bits` picks; rows that are not whole 256-blocks fall back
    /// (Q4_K → Q5_0, Q6_K → Q8_0). Tensors are in `llama-quantize`'s order (by layer, then
    /// name), so the file is byte-identical to the one `llama-quantize` writes without an
    /// importance matrix.
    #[allow(non_camel_case_types)]
    Q4_K_M,
    /// Q8_0 with the token embedding kept in F16 (`llama-quantize --token-embedding-type f16`;
    /// `general.file_type` 7). The embedding is a lookup, so this costs no time, only 190 MB more
    /// file (mapped, never read whole); it removes the weight rounding that makes a few
    /// multilingual texts collapse (docs/NUMERICS.md: dev-multi worst 0.979 → 0.994).
    #[allow(non_camel_case_types)]
    Q8_0_F16Emb,
}

impl OutType {
    /// Every output type.
    pub const ALL: [OutType; 6] =
        [OutType::F32, OutType::F16, OutType::BF16, OutType::Q8_0, OutType::Q4_K_M, OutType::Q8_0_F16Emb];

    /// The value of `general.file_type` (llama.cpp's `LlamaFileType`).
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q8_0 | OutType::Q8_0_F16Emb => 7,
            OutType::Q4_K_M => 15,
            OutType::BF16 => 32,
        }
    }

    /// The lowercase name used on command lines and in file names (`q8_0`, `f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OutType::F32 => "f32",
            OutType::F16 => "f16",
            OutType::BF16 => "bf16",
            OutType::Q8_0 => "q8_0",
            OutType::Q4_K_M => "q4_k_m",
            OutType::Q8_0_F16Emb => "q8_0-f16emb",
        }
    }

    /// Parses a name as printed by [`OutType::name`] (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        OutType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The type 2-D weights are written in (for Q4_K_M the base type of the mixture, which
    /// some tensors upgrade).
    pub fn tensor_type(self) -> TensorType {
        match self {
            OutType::F32 => TensorType::F32,
            OutType::F16 => TensorType::F16,
            OutType::BF16 => TensorType::Bf16,
            OutType::Q8_0 | OutType::Q8_0_F16Emb => TensorType::Q8_0,
            OutType::Q4_K_M => TensorType::Q4K,
        }
    }
}

impl std::fmt::Display for OutType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings beyond the output type.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// The model id llama.cpp's heuristics derive `general.name`, `basename` and `size_label`
    /// from. `None` uses the source folder's name, as llama.cpp does.
    pub model_id: Option<String>,
}

/// Receives progress while tensor data is written.
pub trait ConvertProgress {
    /// Called after each chunk with source bytes done and the total.
    fn advance(&mut self, done: u64, total: u64);
}

impl<F: FnMut(u64, u64)> ConvertProgress for F {
    fn advance(&mut self, done: u64, total: u64) {
        self(done, total)
    }
}

/// What a conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// The output file.
    pub out_path: PathBuf,
    /// The output type.
    pub out_type: OutType,
    /// Metadata keys written.
    pub kv_count: usize,
    /// Tensors written.
    pub tensor_count: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Size of the output file in bytes.
    pub file_size: u64,
}

/// Converts the sentence-transformers folder `src_dir` into a GGUF at `out_path`.
pub fn convert(src_dir: &Path, out_path: &Path, out_type: OutType) -> Result<ConvertReport, ConvertError> {
    convert_with(src_dir, out_path, out_type, &ConvertOptions::default(), &mut |_, _| {})
}

/// [`convert`] with options and a progress callback.
pub fn convert_with(
    src_dir: &Path,
    out_path: &Path,
    out_type: OutType,
    options: &ConvertOptions,
    progress: &mut dyn ConvertProgress,
) -> Result<ConvertReport, ConvertError> {
    let mut plan = build_plan(src_dir, out_type, options)?;
    let file_size = write::write_atomic(&mut plan, out_path, progress)?;
    Ok(report(&plan, out_path, out_type, file_size))
}

/// [`convert_with`] into any writer (a pipe, a device, a temporary file the caller places):
/// the GGUF is streamed, nothing is sought. `out_name` only names the output in the report.
/// The caller flushes `out`.
pub fn convert_to_writer(
    src_dir: &Path,
    out: &mut dyn std::io::Write,
    out_name: &Path,
    out_type: OutType,
    options: &ConvertOptions,
    progress: &mut dyn ConvertProgress,
) -> Result<ConvertReport, ConvertError> {
    let mut plan = build_plan(src_dir, out_type, options)?;
    let (_, file_size) = write::write_to(&mut plan, out, progress)?;
    Ok(report(&plan, out_name, out_type, file_size))
}

fn build_plan(src_dir: &Path, out_type: OutType, options: &ConvertOptions) -> Result<plan::Plan, ConvertError> {
    let model_id = match &options.model_id {
        Some(id) => id.clone(),
        None => folder_model_id(src_dir),
    };
    plan::Plan::build(src_dir, out_type, &model_id)
}

fn report(plan: &plan::Plan, out_path: &Path, out_type: OutType, file_size: u64) -> ConvertReport {
    ConvertReport {
        out_path: out_path.to_path_buf(),
        out_type,
        kv_count: plan.kvs.len(),
        tensor_count: plan.tensors.len(),
        vocab_size: plan.vocab_len,
        file_size,
    }
}

fn folder_model_id(dir: &Path) -> String {
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    canonical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| EMBEDDINGGEMMA_MODEL_ID.to_owned())
}
