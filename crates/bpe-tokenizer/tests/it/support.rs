//! Test data: the model folder, the reference files, and the vocabulary data a GGUF
//! carries, read from `tokenizer.model` with a minimal protobuf reader.

use std::path::PathBuf;
use std::sync::OnceLock;

use bpe_tokenizer::{TokenType, Tokenizer};
use serde::Deserialize;

/// The sentence-transformers model folder (tokenizer.model, tokenizer.json, ...):
/// `GGUFEMBED_TEST_SRC` if set, else model-fetch's verified cache (fetched on first use;
/// it panics with the reason if it cannot, so no test silently skips).
pub fn model_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::var_os("GGUFEMBED_TEST_SRC")
            .map(PathBuf::from)
            .unwrap_or_else(model_fetch::testing::source_dir);
        assert!(
            dir.join("tokenizer.model").is_file() && dir.join("tokenizer.json").is_file(),
            "model folder {} lacks tokenizer.model/tokenizer.json",
            dir.display()
        );
        dir
    })
    .clone()
}

/// `shared/reference`, beside the repository checkout (override: `GGUFEMBED_REFERENCE`).
pub fn reference_dir() -> PathBuf {
    let dir = model_fetch::testing::reference_dir();
    assert!(dir.join("tokens-edge.jsonl").is_file(), "reference folder {} not found", dir.display());
    dir
}

pub const LANGS: [&str; 11] = ["en", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh"];

#[derive(Debug, Clone, Deserialize)]
pub struct DevCase {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EdgeCase {
    pub name: String,
    pub text: String,
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
    pub ids_untruncated: Option<Vec<u32>>,
    pub n_ids_untruncated: Option<usize>,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(name: &str) -> Vec<T> {
    let path = reference_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

pub fn dev_cases(lang: &str) -> Vec<DevCase> {
    let cases: Vec<DevCase> = read_jsonl(&format!("tokens-dev-{lang}.jsonl"));
    assert!(cases.len() > 2000, "tokens-dev-{lang}.jsonl has only {} lines", cases.len());
    cases
}

pub fn edge_cases() -> Vec<EdgeCase> {
    let cases: Vec<EdgeCase> = read_jsonl("tokens-edge.jsonl");
    assert_eq!(cases.len(), 84);
    cases
}

/// One `SentencePiece` message of `tokenizer.model`.
#[derive(Debug, Clone)]
pub struct SpPiece {
    pub piece: String,
    pub score: f32,
    pub kind: i32,
}

/// Reads the `pieces` (field 1) of a SentencePiece `ModelProto`.
pub fn read_sp_model(bytes: &[u8]) -> Vec<SpPiece> {
    let mut pieces = Vec::new();
    for (field, value) in proto_fields(bytes) {
        if field != 1 {
            continue;
        }
        let Value::Bytes(msg) = value else { panic!("pieces must be length-delimited") };
        // Proto2 defaults: score 0, type NORMAL.
        let mut p = SpPiece { piece: String::new(), score: 0.0, kind: 1 };
        for (f, v) in proto_fields(msg) {
            match (f, v) {
                (1, Value::Bytes(b)) => p.piece = String::from_utf8(b.to_vec()).expect("utf-8 piece"),
                (2, Value::Fixed32(x)) => p.score = f32::from_bits(x),
                (3, Value::Varint(t)) => p.kind = t as i32,
                _ => {}
            }
        }
        pieces.push(p);
    }
    pieces
}

enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn proto_fields(mut b: &[u8]) -> Vec<(u64, Value<'_>)> {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut r = 0u64;
        let mut shift = 0;
        loop {
            let (&c, rest) = b.split_first().expect("truncated varint");
            *b = rest;
            r |= u64::from(c & 0x7f) << shift;
            shift += 7;
            if c < 0x80 {
                return r;
            }
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let key = varint(&mut b);
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut b)),
            1 => {
                b = &b[8..];
                Value::Fixed64
            }
            2 => {
                let len = varint(&mut b) as usize;
                let (v, rest) = b.split_at(len);
                b = rest;
                Value::Bytes(v)
            }
            5 => {
                let (v, rest) = b.split_at(4);
                b = rest;
                Value::Fixed32(u32::from_le_bytes(v.try_into().unwrap()))
            }
            t => panic!("unsupported wire type {t}"),
        };
        out.push((key >> 3, value));
    }
    out
}

pub fn sp_pieces() -> &'static [SpPiece] {
    static P: OnceLock<Vec<SpPiece>> = OnceLock::new();
    P.get_or_init(|| {
        let bytes = std::fs::read(model_dir().join("tokenizer.model")).expect("read tokenizer.model");
        let p = read_sp_model(&bytes);
        assert_eq!(p.len(), 262_144);
        p
    })
}

/// The `tokenizer.ggml.*` arrays llama.cpp's `convert_hf_to_gguf.py` writes for this
/// folder: pieces, scores and types from tokenizer.model, then every entry of
/// tokenizer_config.json's `added_tokens_decoder` inside the vocabulary rewritten to
/// score -1000 and type CONTROL (special, or `<unused*>`/`<mask>`-looking) or
/// USER_DEFINED with `▁` replaced by a space. (`<image_soft_token>` from
/// added_tokens.json has id 262144, past the vocabulary, and is dropped.)
/// gguf-layout-q8_0.txt confirms the first entries: scores -1000, types 3.
pub fn gguf_arrays() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let mut tokens: Vec<String> = sp_pieces().iter().map(|p| p.piece.clone()).collect();
    let mut scores: Vec<f32> = sp_pieces().iter().map(|p| p.score).collect();
    let mut types: Vec<i32> = sp_pieces().iter().map(|p| p.kind).collect();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(model_dir().join("tokenizer_config.json")).expect("tokenizer_config.json"),
    )
    .expect("parse tokenizer_config.json");
    let decoder = cfg["added_tokens_decoder"].as_object().expect("added_tokens_decoder");
    for (id, data) in decoder {
        let id: usize = id.parse().expect("numeric id");
        if id >= tokens.len() {
            continue;
        }
        let content = data["content"].as_str().expect("content").to_owned();
        let looks_special = ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(&content.as_str())
            || (content.starts_with("<|") && content.ends_with("|>"))
            || (content.starts_with("<unused") && content.ends_with('>'));
        if data["special"].as_bool() == Some(true) || looks_special {
            types[id] = TokenType::Control.to_gguf();
            tokens[id] = content;
        } else {
            types[id] = TokenType::UserDefined.to_gguf();
            tokens[id] = content.replace('\u{2581}', " ");
        }
        scores[id] = -1000.0;
    }
    (tokens, scores, types)
}

pub fn builder_from(tokens: &[String], scores: &[f32], types: &[i32]) -> bpe_tokenizer::TokenizerBuilder {
    Tokenizer::builder()
        .tokens(tokens)
        .scores(scores.iter().copied())
        .token_types(types.iter().copied())
        .bos_id(2)
        .eos_id(1)
        .unk_id(3)
        .pad_id(0)
        .add_bos(true)
        .add_eos(true)
}

/// Built from exactly what a llama.cpp GGUF of this model holds.
pub fn gguf_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let (tokens, scores, types) = gguf_arrays();
        builder_from(&tokens, &scores, &types).build().expect("build from GGUF arrays")
    })
}

/// Built from tokenizer.model as is, plus added_tokens.json's `<image_soft_token>`:
/// everything HF's tokenizer.json knows.
pub fn full_tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| full_builder().build().expect("build from tokenizer.model"))
}

/// The builder of [`full_tokenizer`].
pub fn full_builder() -> bpe_tokenizer::TokenizerBuilder {
    {
        let p = sp_pieces();
        let tokens: Vec<String> = p.iter().map(|p| p.piece.clone()).collect();
        let scores: Vec<f32> = p.iter().map(|p| p.score).collect();
        let types: Vec<i32> = p.iter().map(|p| p.kind).collect();
        let added: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            &std::fs::read_to_string(model_dir().join("added_tokens.json")).expect("added_tokens.json"),
        )
        .expect("parse added_tokens.json");
        let mut b = builder_from(&tokens, &scores, &types);
        for (text, id) in added {
            b = b.added_token(text, id.as_u64().expect("id") as u32);
        }
        b
    }
}

/// HF tokenizers on the model's tokenizer.json: the parity oracle.
pub fn hf_tokenizer() -> &'static tokenizers::Tokenizer {
    static T: OnceLock<tokenizers::Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).expect("load tokenizer.json")
    })
}

/// Text of a failing case, shortened for the panic message.
pub fn show(text: &str) -> String {
    let mut s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        s.push_str("...");
    }
    format!("{s:?}")
}
