//! Building the tokenizer from a GGUF file's `tokenizer.ggml.*` keys.
//!
//! `bpe-tokenizer` knows nothing of GGUF and `gguf-format` nothing of tokenizers; this is the one
//! place the two meet.

use std::path::Path;

use bpe_tokenizer::Tokenizer;
use gguf_format::GgufFile;

use crate::error::EmbedError;

/// Builds the tokenizer a GGUF file describes, without loading the model's weights (what
/// `ggufembed tokenize` needs).
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer, EmbedError> {
    let path = path.as_ref();
    let file = GgufFile::open(path).map_err(|source| EmbedError::ModelFile {
        path: path.to_owned(),
        source,
    })?;
    tokenizer_from_gguf(&file, tokenizer_cache_dir().as_deref()).map_err(|reason| EmbedError::Tokenizer {
        path: path.to_owned(),
        reason,
    })
}

/// Where derived merge ranks are cached (`bpe_tokenizer::TokenizerBuilder::build_cached`):
/// `tokenizers/` in the model cache (`$GGUFEMBED_HOME`, else the platform cache directory),
/// whatever GGUF the vocabulary came from, since files are named by the vocabulary's hash.
/// `None` (no cache directory on this platform) derives the ranks on every start.
pub(crate) fn tokenizer_cache_dir() -> Option<std::path::PathBuf> {
    model_fetch::ModelStore::default_root().ok().map(|root| root.join("tokenizers"))
}

/// Why a GGUF's tokenizer description cannot be used.
pub(crate) fn tokenizer_from_gguf(file: &GgufFile, cache: Option<&Path>) -> Result<Tokenizer, String> {
    let model = file
        .get_str("tokenizer.ggml.model")
        .map_err(|e| e.to_string())?;
    // Gemma's SentencePiece model is what llama.cpp calls `llama`; other tokenizer families
    // (GPT-2 byte-level BPE, WordPiece...) would need other algorithms.
    if model != "llama" {
        return Err(format!(
            "tokenizer.ggml.model is {model:?}; only SentencePiece (\"llama\") is supported"
        ));
    }
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")
        .map_err(|e| e.to_string())?;
    let scores = file
        .get_f32_array("tokenizer.ggml.scores")
        .map_err(|e| e.to_string())?;
    let types = file
        .get_i32_array("tokenizer.ggml.token_type")
        .map_err(|e| e.to_string())?;
    let n_tokens = tokens.len();
    let mut builder = Tokenizer::builder()
        .tokens(tokens)
        .scores(scores)
        .token_types(types);
    // Optional keys: absent means "not defined", a wrong type is an error.
    let id = |key: &str| -> Result<Option<u32>, String> {
        match file.get_u32(key) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_missing_key() => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match file.get_bool(key) {
            Ok(v) => Ok(v),
            Err(e) if e.is_missing_key() => Ok(default),
            Err(e) => Err(e.to_string()),
        }
    };
    if let Some(v) = id("tokenizer.ggml.bos_token_id")? {
        builder = builder.bos_id(v);
    }
    if let Some(v) = id("tokenizer.ggml.eos_token_id")? {
        builder = builder.eos_id(v);
    }
    if let Some(v) = id("tokenizer.ggml.unknown_token_id")? {
        builder = builder.unk_id(v);
    }
    if let Some(v) = id("tokenizer.ggml.padding_token_id")? {
        builder = builder.pad_id(v);
    }
    // Gemma's tokenizer adds no dummy space in front of a text; a file asking for one describes
    // a different SentencePiece set-up than the one this tokenizer reproduces.
    if flag("tokenizer.ggml.add_space_prefix", false)? {
        return Err("tokenizer.ggml.add_space_prefix is true; only Gemma's no-prefix SentencePiece is supported".into());
    }
    // llama.cpp's defaults for SentencePiece models when the flags are absent.
    builder = builder
        .add_bos(flag("tokenizer.ggml.add_bos_token", true)?)
        .add_eos(flag("tokenizer.ggml.add_eos_token", false)?);
    // HF's tokenizer.json for Gemma 3 (EmbeddingGemma included) has one added token past the
    // 262,144-piece vocabulary, `<image_soft_token>` = 262144, which llama.cpp's converter cannot
    // store (no embedding row exists for it). Restoring it keeps tokenization id-for-id with the
    // reference; embedding a text that contains it is then a typed error, as in the reference.
    let arch = file.get_str("general.architecture").unwrap_or("");
    if matches!(arch, "gemma-embedding" | "gemma3") && n_tokens == GEMMA_VOCAB {
        builder = builder.added_token("<image_soft_token>", GEMMA_VOCAB as u32);
    }
    match cache {
        // A cache that cannot be read or written only costs the derivation: the status is
        // not an error, and the tokenizer is the same either way.
        Some(dir) => builder.build_cached(dir).map(|(tok, _status)| tok).map_err(|e| e.to_string()),
        None => builder.build().map_err(|e| e.to_string()),
    }
}

/// Gemma 3's SentencePiece vocabulary size.
const GEMMA_VOCAB: usize = 262_144;
