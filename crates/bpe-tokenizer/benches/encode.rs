//! Single-thread encode throughput on the STS-B dev sentences (all tokens-dev-*.jsonl
//! texts): this crate against HF `tokenizers` on the same model's tokenizer.json.
//!
//! Needs the model folder (`GGUFEMBED_TEST_SRC`, else model-fetch's cache) and
//! shared/reference (`GGUFEMBED_REFERENCE`, else beside the checkout).

use std::hint::black_box;
use std::path::PathBuf;

use bpe_tokenizer::{Scratch, Tokenizer};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const LANGS: [&str; 11] = ["en", "de", "es", "fr", "it", "ja", "nl", "pl", "pt", "ru", "zh"];

fn model_dir() -> PathBuf {
    std::env::var_os("GGUFEMBED_TEST_SRC").map(PathBuf::from).unwrap_or_else(model_fetch::testing::source_dir)
}

fn reference_dir() -> PathBuf {
    model_fetch::testing::reference_dir()
}

fn texts() -> Vec<String> {
    let mut texts = Vec::new();
    for lang in LANGS {
        let path = reference_dir().join(format!("tokens-dev-{lang}.jsonl"));
        let data = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for line in data.lines().filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("json line");
            texts.push(v["text"].as_str().expect("text").to_owned());
        }
    }
    texts
}

/// Pieces, scores and types from tokenizer.model (the data a GGUF carries), read with a
/// few lines of protobuf decoding.
fn ours(word_cache: bool) -> Tokenizer {
    let (tokens, scores, types) = vocab();
    Tokenizer::builder()
        .tokens(&tokens)
        .scores(scores)
        .token_types(types)
        .bos_id(2)
        .eos_id(1)
        .unk_id(3)
        .pad_id(0)
        .add_bos(true)
        .add_eos(true)
        .word_cache(word_cache)
        .build()
        .expect("build")
}

fn vocab() -> (Vec<String>, Vec<f32>, Vec<i32>) {
    let bytes = std::fs::read(model_dir().join("tokenizer.model")).expect("tokenizer.model");
    let (mut tokens, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    let mut b = &bytes[..];
    while !b.is_empty() {
        let key = varint(&mut b);
        match key & 7 {
            0 => {
                varint(&mut b);
            }
            1 => b = &b[8..],
            5 => b = &b[4..],
            2 => {
                let len = varint(&mut b) as usize;
                let (msg, rest) = b.split_at(len);
                b = rest;
                if key >> 3 == 1 {
                    let (t, s, ty) = piece(msg);
                    tokens.push(t);
                    scores.push(s);
                    types.push(ty);
                }
            }
            t => panic!("wire type {t}"),
        }
    }
    (tokens, scores, types)
}

fn piece(mut b: &[u8]) -> (String, f32, i32) {
    let (mut text, mut score, mut ty) = (String::new(), 0.0, 1);
    while !b.is_empty() {
        let key = varint(&mut b);
        match (key >> 3, key & 7) {
            (1, 2) => {
                let len = varint(&mut b) as usize;
                text = String::from_utf8(b[..len].to_vec()).expect("utf-8");
                b = &b[len..];
            }
            (2, 5) => {
                score = f32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
                b = &b[4..];
            }
            (3, 0) => ty = varint(&mut b) as i32,
            (_, w) => panic!("unexpected field wire type {w}"),
        }
    }
    (text, score, ty)
}

fn varint(b: &mut &[u8]) -> u64 {
    let (mut r, mut shift) = (0u64, 0);
    loop {
        let c = b[0];
        *b = &b[1..];
        r |= u64::from(c & 0x7f) << shift;
        shift += 7;
        if c < 0x80 {
            return r;
        }
    }
}

fn bench_encode(c: &mut Criterion) {
    let texts = texts();
    let bytes: usize = texts.iter().map(String::len).sum();
    let tok = ours(true);
    let uncached = ours(false);
    let hf = tokenizers::Tokenizer::from_file(model_dir().join("tokenizer.json")).expect("tokenizer.json");
    for t in texts.iter().take(200) {
        let theirs = hf.encode(t.as_str(), true).expect("hf").get_ids().to_vec();
        assert_eq!(tok.encode(t), theirs, "bench peers disagree on {t:?}");
        assert_eq!(uncached.encode(t), theirs, "bench peers disagree on {t:?}");
    }
    eprintln!("{} texts, {bytes} bytes", texts.len());

    let mut g = c.benchmark_group("encode/sts-dev-all");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bpe-tokenizer/encode_into", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for t in &texts {
                tok.encode_into(t, &mut out);
                black_box(&out);
            }
        })
    });
    g.bench_function("bpe-tokenizer/encode_into_with_scratch", |b| {
        let (mut out, mut scratch) = (Vec::new(), Scratch::new());
        b.iter(|| {
            for t in &texts {
                tok.encode_into_with(t, &mut out, &mut scratch);
                black_box(&out);
            }
        })
    });
    g.bench_function("bpe-tokenizer/encode_into_no_word_cache", |b| {
        let mut out = Vec::new();
        b.iter(|| {
            for t in &texts {
                uncached.encode_into(t, &mut out);
                black_box(&out);
            }
        })
    });
    g.bench_function("bpe-tokenizer/encode", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(tok.encode(t));
            }
        })
    });
    g.bench_function("tokenizers/encode", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(hf.encode(t.as_str(), true).expect("hf"));
            }
        })
    });
    g.bench_function("tokenizers/encode_fast", |b| {
        b.iter(|| {
            for t in &texts {
                black_box(hf.encode_fast(t.as_str(), true).expect("hf"));
            }
        })
    });
    g.finish();
}

/// Building the tables (merge ranks derived from 262,144 pieces) from vocabulary data
/// already in memory, as the runtime does after reading the GGUF.
fn bench_build(c: &mut Criterion) {
    let (tokens, scores, types) = vocab();
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.bench_function("gemma-262k", |b| {
        b.iter(|| {
            Tokenizer::builder()
                .tokens(&tokens)
                .scores(scores.iter().copied())
                .token_types(types.iter().copied())
                .bos_id(2)
                .eos_id(1)
                .unk_id(3)
                .add_bos(true)
                .add_eos(true)
                .build()
                .expect("build")
        })
    });
    g.finish();
}

criterion_group!(benches, bench_encode, bench_build);
criterion_main!(benches);
