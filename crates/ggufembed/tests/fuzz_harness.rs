//! The fuzz targets' checks (`crates/ggufembed/fuzz/harness.rs`) driven by proptest in CI, and
//! the public `Embedder::embed` on arbitrary Unicode: finite unit vectors or a typed per-text
//! error, never a panic or another error.
//!
//! Case counts keep each test within a few seconds; the cargo-fuzz targets run the same checks
//! for as long as one likes (see `crates/ggufembed/fuzz`).

use std::sync::OnceLock;

use embed_runtime::{EmbedError, Embedder, TextError};
use proptest::prelude::*;

#[path = "../fuzz/harness.rs"]
mod harness;

/// |norm − 1| a full 768-d vector may show (it ends in an f32 L2 normalisation).
const UNIT_NORM_TOLERANCE: f32 = 1e-4;

fn tokenizer() -> &'static embed_runtime::Tokenizer {
    static T: OnceLock<embed_runtime::Tokenizer> = OnceLock::new();
    T.get_or_init(|| embed_runtime::load_tokenizer(model_fetch::testing::gguf(model_fetch::OutType::Q8_0)).unwrap())
}

fn embedder() -> &'static Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        Embedder::builder().model(model_fetch::testing::gguf(model_fetch::OutType::Q8_0)).threads(2).build().unwrap()
    })
}

/// Bytes shaped like input files: lines, CRLF, BOMs, JSON fragments, invalid UTF-8.
fn input_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just(b"{\"text\": \"".to_vec()),
        Just(b"\"}".to_vec()),
        Just(b"{\"text\": 1}".to_vec()),
        Just(b"{}".to_vec()),
        Just(b"\\n".to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"\xc3".to_vec()),
        Just(b" ".to_vec()),
        "[a-z\u{e9}\u{4e2d}]{0,4}".prop_map(String::into_bytes),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

/// Text that reaches the tokenizer's corners: special-token text, byte fallback, `▁`, spaces.
fn tricky_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<image_soft_token>".to_owned()),
        Just("<bos>".to_owned()),
        Just("<start_of_image>".to_owned()),
        Just("<unused0>".to_owned()),
        Just("<mask>".to_owned()),
        Just("\u{2581}".to_owned()),
        Just("  ".to_owned()),
        Just("\n\t".to_owned()),
        Just("<".to_owned()),
        "[a-zA-Z]{1,8}".prop_map(|s| s),
        any::<char>().prop_map(|c| c.to_string()),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn the_input_reader_keeps_its_rules_on_arbitrary_bytes(data in input_bytes()) {
        harness::read_input(&data);
    }

    #[test]
    fn the_input_reader_survives_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        harness::read_input(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn the_tokenizer_keeps_its_properties_on_arbitrary_text(text in tricky_text()) {
        harness::tokenize(tokenizer(), text.as_bytes());
    }

    #[test]
    fn the_tokenizer_survives_raw_bytes(data in prop::collection::vec(any::<u8>(), 0..256)) {
        harness::tokenize(tokenizer(), &data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn embed_gives_finite_unit_vectors_or_a_typed_text_error(
        texts in prop::collection::vec(prop_oneof![tricky_text(), any::<String>()], 1..5)
    ) {
        match embedder().embed(&texts) {
            Ok(out) => {
                prop_assert_eq!(out.len(), texts.len());
                for (i, row) in out.iter().enumerate() {
                    prop_assert!(row.iter().all(|v| v.is_finite()), "text {} ({:?}): non-finite value", i, texts[i]);
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    prop_assert!((norm - 1.0).abs() < UNIT_NORM_TOLERANCE, "text {} ({:?}): norm {}", i, texts[i], norm);
                }
            }
            Err(EmbedError::Text { index, source: TextError::IdOutOfVocab { .. } }) => {
                // The one text-level refusal text can cause: a token the embedding matrix lacks.
                prop_assert!(texts[index].contains("<image_soft_token>"), "{:?}", texts[index]);
            }
            Err(e) => prop_assert!(false, "untyped or unexpected error for {:?}: {}", texts, e),
        }
    }
}
