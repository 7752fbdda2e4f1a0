//! Bad input gets a typed error and loses nothing.

use embed_runtime::{EmbedError, Embedder, TextError, Truncation};

use crate::support::*;

#[test]
fn missing_model_file_is_a_model_file_error() {
    let err = Embedder::builder().model("/nonexistent/model.gguf").build().unwrap_err();
    assert!(matches!(err, EmbedError::ModelFile { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/model.gguf"));
}

#[test]
fn a_file_that_is_not_gguf_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.gguf");
    std::fs::write(&path, b"this is not a gguf file at all, just text").unwrap();
    let err = Embedder::builder().model(&path).build().unwrap_err();
    assert!(matches!(err, EmbedError::ModelFile { .. }), "{err}");
}

#[test]
fn a_gguf_of_another_architecture_is_rejected() {
    // A real llama.cpp file (Gemma 3 270M, a decoder LM): parses, but is not gemma-embedding.
    let path = model_fetch::testing::gemma3_270m();
    let err = Embedder::builder().model(&path).build().unwrap_err();
    assert!(matches!(err, EmbedError::Model { .. }), "{err}");
}

#[test]
fn options_out_of_range_are_rejected() {
    for build in [
        Embedder::builder().model(q8_0_model()).dims(300),
        Embedder::builder().model(q8_0_model()).dims(0),
        Embedder::builder().model(q8_0_model()).dims(1024),
        Embedder::builder().model(q8_0_model()).threads(0),
        Embedder::builder().model(q8_0_model()).threads(usize::MAX),
        Embedder::builder().model(q8_0_model()).threads(99_999_999_999),
        Embedder::builder().model(q8_0_model()).token_budget(0),
        Embedder::builder().model(q8_0_model()).token_budget(embed_runtime::MAX_TOKEN_BUDGET + 1),
        Embedder::builder().model(q8_0_model()).token_budget(usize::MAX),
    ] {
        let err = build.build().unwrap_err();
        assert!(matches!(err, EmbedError::InvalidOption(_)), "{err}");
    }
}

#[test]
fn too_long_is_an_error_when_asked_and_truncated_otherwise() {
    let (cases, _) = reference_set("long");
    let long = &cases.last().unwrap().text; // 2523 tokens
    let strict = Embedder::builder()
        .model(q8_0_model())
        .threads(2)
        .truncation(Truncation::Error)
        .build()
        .unwrap();
    let err = strict.embed(&["short", long.as_str()]).unwrap_err();
    match err {
        EmbedError::Text {
            index,
            source: TextError::TooLong { tokens, limit },
        } => {
            assert_eq!(index, 1);
            assert_eq!(limit, 2048);
            assert!(tokens > 2048);
        }
        other => panic!("expected TooLong, got {other}"),
    }
    // The embedder is still usable after the failed call.
    let ok = strict.embed(&["short"]).unwrap();
    assert_eq!(ok.len(), 1);

    let out = q8_0().embed(&[long.as_str()]).unwrap();
    assert!(out.truncated()[0]);
    assert_eq!(out.token_counts()[0], 2048);
}

#[test]
fn options_are_checked_before_the_model_is_opened() {
    // The model path does not exist: an option error proves the option was checked first.
    for (build, needle) in [
        (Embedder::builder().dims(100), "dimension 100"),
        (Embedder::builder().threads(0), "threads"),
        (Embedder::builder().threads(1 << 40), "per available core"),
    ] {
        let err = build.model("/nonexistent/model.gguf").build().unwrap_err();
        assert!(matches!(err, EmbedError::InvalidOption(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

#[test]
fn a_text_the_model_cannot_embed_names_its_position_and_the_token() {
    // HF tokenizers gives <image_soft_token> id 262144, one past the embedding matrix.
    let texts = ["fine", "also fine", "an <image_soft_token> here"];
    let err = q8_0().embed(&texts).unwrap_err();
    match &err {
        EmbedError::Text {
            index: 2,
            source: TextError::IdOutOfVocab { id: 262144, vocab: 262144, piece },
        } => assert_eq!(piece.as_deref(), Some("<image_soft_token>")),
        other => panic!("expected IdOutOfVocab for text 2, got {other}"),
    }
    assert!(err.to_string().contains("<image_soft_token>"), "{err}");
    // Nothing is lost: the same embedder embeds the good texts.
    assert_eq!(q8_0().embed(&texts[..2]).unwrap().len(), 2);
}
